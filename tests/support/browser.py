"""Label Studio's labeling screen in headless Chromium, driven the way an annotator uses it.

Needs Debian's ``chromium`` and ``chromium-driver`` (scripts/provision.sh installs them when it
can) and ``selenium`` (dev extra); selenium is pointed at the system driver, so nothing is
downloaded. Screenshots go to ``artifacts/`` for the test report.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
AUTO_ANNOTATION = "[data-testid=bottombar-auto-annotation-toggle]"
T = TypeVar("T")


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (skips the test when it is not installed)."""
    binary, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver_path):
        pytest.skip("headless Chromium not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def login(driver: Any, label_studio: Any) -> None:
    from selenium.webdriver.common.by import By

    driver.get(label_studio.url + "/user/login/")
    driver.find_element(By.NAME, "email").send_keys(label_studio.username)
    driver.find_element(By.NAME, "password").send_keys(label_studio.password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
    wait_for(lambda: "/user/login" not in driver.current_url, 60, "the login")


def open_task(driver: Any, label_studio: Any, project_id: int, task_id: int, quiet_s: float = 3.0) -> None:
    """Open a task's labeling screen and return once Label Studio has stopped reloading the task.

    The data manager fetches an opened task twice (``GET /api/tasks/<id>`` ~0.1-0.8 s apart) and
    rebuilds the labeling screen from the second answer; what is typed or selected in the first
    screen is lost with it. An annotator never acts that fast; a test does, so it waits until the
    last fetch of the task is ``quiet_s`` seconds old (the browser's own resource timings).
    """
    driver.get(f"{label_studio.url}/projects/{project_id}/data?task={task_id}")
    since_last_load = """
        const loads = performance.getEntriesByType('resource')
            .filter(e => e.name.includes('/api/tasks/' + arguments[0] + '?') && e.responseEnd > 0);
        return loads.length ? (performance.now() - Math.max(...loads.map(e => e.responseEnd))) / 1000 : null;"""

    def settled() -> bool:
        age = driver.execute_script(since_last_load, task_id)
        return age is not None and age >= quiet_s

    wait_for(settled, 120, f"the labeling screen of task {task_id} loaded and not reloaded for {quiet_s:g} s")


def auto_annotation_on(driver: Any) -> None:
    """Switch the labeling screen's Auto-Annotation toggle on (shown with an interactive backend)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def switched_on() -> bool:
        try:
            toggles = driver.find_elements(By.CSS_SELECTOR, AUTO_ANNOTATION)
            if toggles and not toggles[0].is_selected():
                # The checkbox sits under its styled label, which takes the pointer: click it in the page.
                driver.execute_script("arguments[0].click()", toggles[0])
            return bool(toggles) and toggles[0].is_selected()
        except StaleElementReferenceException:  # the screen re-rendered under us: look again
            return False

    wait_for(switched_on, 180, "the Auto-Annotation toggle on (shown when an interactive backend is connected)",
             interval=1)


def reread(read: Callable[[], T], attempts: int = 20, pause: float = 0.25) -> T:
    """``read()`` of the labeling screen, done again when the screen re-rendered under it (Label
    Studio re-renders as a prediction or an interactive answer is applied: the elements found a
    moment ago are gone, StaleElementReferenceException)."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(attempts - 1):
        try:
            return read()
        except StaleElementReferenceException:
            time.sleep(pause)
    return read()


def selected_radios(driver: Any) -> list[str]:
    """The names of the radio choices selected on the labeling screen."""
    from selenium.webdriver.common.by import By

    return reread(lambda: [r.get_attribute("name") for r in driver.find_elements(By.CSS_SELECTOR,
                                                                                  "input.ant-radio-input")
                           if r.is_selected()])


def double_click_text(driver: Any, word: str) -> None:
    """Double-click a word of the task's text (the browser selects it, as a mouse user would)."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    where = driver.execute_script("""
        const root = document.querySelector('.lsf-richtext');
        const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
        let node;
        while ((node = walker.nextNode())) {
          const at = node.data.indexOf(arguments[0]);
          if (at >= 0) {
            const range = document.createRange();
            range.setStart(node, at);
            range.setEnd(node, at + arguments[0].length);
            const box = range.getBoundingClientRect();
            return [box.left + box.width / 2, box.top + box.height / 2];
          }
        }
        return null;""", word)
    assert where, f"{word!r} is not in the labeling screen's text"
    actions = ActionBuilder(driver)
    actions.pointer_action.move_to_location(int(where[0]), int(where[1]))
    actions.pointer_action.double_click()
    actions.perform()


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path
