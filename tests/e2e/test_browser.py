"""The pre-annotation as an annotator sees it: Label Studio's labeling UI in headless Chromium.

The browser helpers (system Chromium + selenium, nothing downloaded) are in
``tests/support/browser.py``; the screenshot is kept under ``artifacts/`` for the test report.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.browser import chromium, login, open_task, reread, screenshot, selected_radios
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CONFIG = (ROOT / "label_config" / "templates" / "search_intent.xml").read_text()


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


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

    login(browser, label_studio)
    open_task(browser, label_studio, project.id, prediction.task)

    selected = wait_for(lambda: selected_radios(browser), 60, "the labeling UI with the pre-annotation")
    time.sleep(1)  # let the annotation tabs settle for the screenshot
    screenshot(browser, "pre-annotated-task.png")
    assert selected == [chosen], "the UI shows another choice than the stored prediction"
    tabs = reread(lambda: " ".join(e.text for e in browser.find_elements(By.CSS_SELECTOR,
                                                                         ".lsf-annotation-button__name")))
    assert prediction.model_version.split("@")[0] in tabs, tabs
    assert "facebook login" in browser.page_source
