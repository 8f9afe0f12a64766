"""The pre-annotation as an annotator sees it: Label Studio's labeling UI in headless Chromium.

Needs Debian's ``chromium`` and ``chromium-driver`` (scripts/provision.sh installs them when it
can) and ``selenium`` (dev extra); selenium is pointed at the system driver, so nothing is
downloaded. The screenshot is kept under ``artifacts/`` for the test report.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
CONFIG = (ROOT / "label_config" / "templates" / "search_intent.xml").read_text()


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("headless Chromium not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_pre_annotation_is_rendered_in_the_labeling_ui(browser, label_studio, backend_factory) -> None:
    from selenium.webdriver.common.by import By

    backend = backend_factory.start(label_studio=label_studio, name="browser-backend")
    client = label_studio.sdk()
    project = client.projects.create(title="browser check", label_config=CONFIG)
    client.projects.import_tasks(id=project.id, request=[{"text": "facebook login"}])
    client.ml.create(project=project.id, url=backend.url, title="prelabel", is_interactive=False)
    client.actions.create(id="retrieve_tasks_predictions", project=project.id,
                          selected_items={"all": True, "excluded": []})
    [prediction] = wait_for(lambda: list(client.predictions.list(project=project.id)), 180, "the prediction")
    [region] = [r for r in prediction.result if r["from_name"] == "intent"]
    [chosen] = region["value"]["choices"]

    browser.get(label_studio.url + "/user/login/")
    browser.find_element(By.NAME, "email").send_keys(label_studio.username)
    browser.find_element(By.NAME, "password").send_keys(label_studio.password)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
    wait_for(lambda: "/user/login" not in browser.current_url, 30, "the login")
    browser.get(f"{label_studio.url}/projects/{project.id}/data?task={prediction.task}")

    def rendered() -> list[str]:
        radios = browser.find_elements(By.CSS_SELECTOR, "input.ant-radio-input")
        return [r.get_attribute("name") for r in radios if r.is_selected()]

    selected = wait_for(rendered, 60, "the labeling UI with the pre-annotation")
    time.sleep(1)  # let the annotation tabs settle for the screenshot
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    browser.save_screenshot(str(artifacts / "pre-annotated-task.png"))
    assert selected == [chosen], "the UI shows another choice than the stored prediction"
    tabs = " ".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, ".lsf-annotation-button__name"))
    assert prediction.model_version.split("@")[0] in tabs, tabs
    assert "facebook login" in browser.page_source
