"""Interactive pre-annotation in the real Label Studio 1.23.2 with the real backend and model.

A recorder (``tests/servers/recorder.py`` with ``forward_to``) sits between Label Studio and the
backend: it keeps the exact ``/predict`` body the labeling screen makes Label Studio send and the
backend's answer. The first two tests drive the labeling screen in headless Chromium (typing a
prompt, selecting a span with Auto-Annotation on); the others call Label Studio's own
interactive endpoint (``POST /api/ml/<id>/interactive-annotating``, the one the screen calls).
"""

from __future__ import annotations

import html
import uuid
from pathlib import Path
from typing import Any

import pytest

from prelabel.contract import outcome_key
from tests.servers.recorder import Recorded, RecordingBackend
from tests.support.backend_proc import metric_value
from tests.support.browser import (
    auto_annotation_on,
    chromium,
    double_click_text,
    login,
    open_task,
    reread,
    screenshot,
    selected_radios,
)
from tests.support.tenancy import project_ref
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "label_config" / "templates"
PROMPT_CONFIG = (TEMPLATES / "interactive_prompt.xml").read_text()
# allowEmpty: a span can be selected without choosing a label first ("label this for me")
NER_CONFIG = (TEMPLATES / "ner.xml").read_text().replace(
    '<Labels name="label" toName="text">', '<Labels name="label" toName="text" allowEmpty="true">')
NER_TEXT = "Angela Merkel met Emmanuel Macron in Paris on Tuesday."
MESSAGE = "The parcel arrived today but the lamp inside is broken in two pieces."
PREDICT_KEYS = {"tasks", "project", "label_config", "params"}
NER_LABELS = {"PER", "ORG", "LOC", "MISC"}
BUDGET_S = 95  # Label Studio gives an interactive /predict 100 s; the shared 2-core test machine is slow


@pytest.fixture(scope="module")
def backend(backend_factory, label_studio):
    started = backend_factory.start(label_studio=label_studio, name="interactive-backend",
                                    env={"PRELABEL_INTERACTIVE_BUDGET": str(BUDGET_S)})
    yield started
    backend_factory.stop_all([started])


@pytest.fixture()
def recorder(backend):
    rec = RecordingBackend(forward_to=backend.url).start()
    yield rec
    rec.stop()


def make_project(label_studio, recorder, config: str, guideline: str, texts: list[str], **settings: Any):
    client = label_studio.sdk()
    project = client.projects.create(title=f"interactive-{uuid.uuid4().hex[:8]}", label_config=config, **settings)
    ids = client.projects.import_tasks(id=project.id, request=[{"text": t} for t in texts], return_task_ids=True)
    ml = client.ml.create(project=project.id, url=recorder.url, title="prelabel", is_interactive=True,
                          extra_params={"guideline": guideline})
    return project, list(ids.task_ids), ml


def interactive_calls(recorder: RecordingBackend) -> list[Recorded]:
    return [r for r in recorder.by_path("/predict")
            if isinstance(r.body, dict) and (r.body.get("params") or {}).get("context") is not None]


def interactive_call(recorder: RecordingBackend, control: str, timeout: float = BUDGET_S + 60) -> Recorded:
    """The first interactive /predict whose context has a region of ``control``, once answered."""
    def done(_: list[Recorded]) -> Recorded | None:
        return next((r for r in interactive_calls(recorder) if r.answer is not None and any(
            isinstance(x, dict) and x.get("from_name") == control for x in r.body["params"]["context"]["result"])),
            None)

    return recorder.wait_for(done, timeout, f"an interactive /predict about {control!r} answered by the backend")


def ask(label_studio, ml_id: int, task_id: int, context: Any) -> dict[str, Any]:
    """Label Studio's interactive endpoint, as the labeling screen calls it; its ``data``."""
    with label_studio.http(timeout=BUDGET_S + 60) as http:
        response = http.post(f"/api/ml/{ml_id}/interactive-annotating", json={"task": task_id, "context": context})
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    assert "errors" not in body, body  # a 5xx or an unusable answer from the backend comes back as errors
    return body["data"]


def calls_since(recorder: RecordingBackend, start: float) -> list[str]:
    """Each interactive /predict from ``start`` on: when it came, its controls, whether answered."""
    return [f"+{r.at - start:.1f}s {sorted(str(x.get('from_name')) for x in r.body['params']['context']['result'])} "
            + ("answered" if r.answer is not None else "unanswered")
            for r in interactive_calls(recorder) if r.at >= start]


def region(prediction: dict[str, Any], control: str) -> dict[str, Any]:
    [found] = [r for r in prediction["result"] if r["from_name"] == control]
    return found


# --- the labeling screen ------------------------------------------------------------------------
def test_prompt_typed_in_the_labeling_screen(label_studio, recorder) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    project, [task_id], _ = make_project(label_studio, recorder, PROMPT_CONFIG, "interactive_prompt", [MESSAGE])
    # pre-annotated first, as tasks are when annotators open them (a task without a prediction
    # would be pre-annotated on opening, and the screen reloaded when that answer comes)
    client = label_studio.sdk()
    client.actions.create(id="retrieve_tasks_predictions", project=project.id,
                          selected_items={"all": True, "excluded": []})
    instruction = "Write a one-sentence apology to the customer."
    with chromium() as browser:
        login(browser, label_studio)
        open_task(browser, label_studio, project.id, task_id)
        auto_annotation_on(browser)

        # as an annotator does: type once the screen shows the task's pre-annotation (Label Studio
        # builds the annotation from it; a prompt typed before that lands in an annotation it replaces)
        wait_for(lambda: selected_radios(browser), 120, "the pre-annotation on screen")
        prompt_box = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "input[name=prompt]"), 120,
                              "the prompt TextArea")[0]
        before = [r.body["params"]["context"] for r in interactive_calls(recorder)]
        prompt_box.send_keys(instruction + Keys.ENTER)
        call = interactive_call(recorder, "prompt")
        print("interactive calls before the prompt:", before)

        # what Label Studio sends: the usual /predict body, the context in params
        assert set(call.body) == PREDICT_KEYS
        assert set(call.body["params"]) == {"login", "password", "context"}
        context = call.body["params"]["context"]
        assert set(context) == {"result"}
        by_control = {r["from_name"]: r for r in context["result"]}
        typed = by_control["prompt"]
        assert {"id", "from_name", "to_name", "type", "value", "origin"} <= set(typed)
        assert (typed["type"], typed["to_name"], typed["origin"]) == ("textarea", "text", "manual")
        assert typed["value"] == {"text": [instruction]}
        # the other classification results on screen come along: here the pre-annotation, untouched
        assert {r["origin"] for name, r in by_control.items() if name != "prompt"} <= {"prediction"}
        [task] = call.body["tasks"]
        assert task["id"] == task_id and "drafts" in task

        [answer] = call.answer["results"]
        provenance = answer["meta"]["provenance"]
        assert provenance["interactive"] is True and provenance["context"]["prompt"] is True
        assert provenance["context"]["given"] == []  # the pre-annotation's values are not the annotator's
        text = region(answer, "answer")["value"]["text"][0]
        [category] = region(answer, "category")["value"]["choices"]

        # the answer lands in the controls on screen
        def on_screen() -> tuple[str, list[str]]:
            return " ".join(html.unescape(browser.page_source).split()), selected_radios(browser)

        def shown() -> bool:
            page, radios = on_screen()
            return " ".join(text.split()) in page and radios == [category]

        try:
            wait_for(shown, 60, "the interactive answer in the labeling screen",
                     context=lambda: f"answer {text!r} / {category!r}; radios on screen {on_screen()[1]}; "
                                     f"interactive calls from the prompt's on: {calls_since(recorder, call.at)}")
        finally:
            screenshot(browser, "interactive-session.png")


def test_span_selected_in_the_labeling_screen(label_studio, recorder) -> None:
    from selenium.webdriver.common.by import By

    # no pre-annotation on opening: the selection is the only span on the task
    project, [task_id], _ = make_project(label_studio, recorder, NER_CONFIG, "ner", [NER_TEXT],
                                         show_collab_predictions=False)
    with chromium() as browser:
        login(browser, label_studio)
        open_task(browser, label_studio, project.id, task_id)
        auto_annotation_on(browser)
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".lsf-label_empty"), 60, "the empty label")[0].click()
        double_click_text(browser, "Paris")
        call = interactive_call(recorder, "label")

        [selection] = call.body["params"]["context"]["result"]
        assert set(selection) == {"id", "from_name", "to_name", "type", "value", "origin"}
        assert (selection["from_name"], selection["type"], selection["origin"]) == ("label", "labels", "manual")
        assert selection["value"] == {"start": 37, "end": 42, "text": "Paris", "labels": []}

        [answer] = call.answer["results"]
        [labeled] = answer["result"]  # a label for that span only
        assert labeled["id"] == selection["id"]  # so Label Studio replaces the selection in place
        assert {k: labeled["value"][k] for k in ("start", "end", "text")} == {"start": 37, "end": 42, "text": "Paris"}
        [label] = labeled["value"]["labels"]
        assert label in NER_LABELS
        assert answer["meta"]["provenance"]["context"]["selected_spans"] == {"label": [[37, 42]]}

        def regions() -> list[str]:
            return reread(lambda: [e.text for e in
                                   browser.find_elements(By.CSS_SELECTOR, ".lsf-tree__node_type_richtextregion")])

        shown = wait_for(lambda: (r := regions()) and label in r[0] and r, 60, "the labeled span in the region list")
        assert len(shown) == 1 and "Paris" in shown[0], shown  # replaced, not duplicated
        screenshot(browser, "interactive-span.png")


# --- Label Studio's interactive endpoint ----------------------------------------------------------
def test_annotator_prompt_changes_the_answer(label_studio, recorder) -> None:
    _, [task_id], ml = make_project(label_studio, recorder, PROMPT_CONFIG, "interactive_prompt", [MESSAGE],
                                    show_collab_predictions=False)
    plain = ask(label_studio, ml.id, task_id, {"result": []})
    asked = ask(label_studio, ml.id, task_id, {"result": [
        {"id": "p1", "from_name": "prompt", "to_name": "text", "type": "textarea", "origin": "manual",
         "value": {"text": ['Answer with exactly these words: "We are sorry about your lamp."']}}]})
    assert plain["meta"]["provenance"]["context"]["prompt"] is False
    assert asked["meta"]["provenance"]["context"] == {"prompt": True, "prompt_chars": 64, "selected_spans": {},
                                                      "given": [], "ignored": []}
    # the instruction reached the model: its answer is another one, under the project's model_version
    assert region(asked, "answer")["value"] != region(plain, "answer")["value"]
    assert asked["model_version"] == plain["model_version"]
    assert asked["meta"]["provenance"]["interactive_prompt_version"] != plain["meta"]["provenance"]["prompt_version"]


def test_selected_span_gets_a_label_for_that_span_only(label_studio, recorder) -> None:
    _, [task_id], ml = make_project(label_studio, recorder, NER_CONFIG, "ner", [NER_TEXT],
                                    show_collab_predictions=False)
    selection = {"id": "sel-paris", "from_name": "label", "to_name": "text", "type": "labels", "origin": "manual",
                 "value": {"start": 37, "end": 42, "text": "Paris", "labels": []}}
    answer = ask(label_studio, ml.id, task_id, {"result": [selection]})
    [labeled] = answer["result"]
    assert labeled["id"] == "sel-paris"
    assert (labeled["value"]["start"], labeled["value"]["end"], labeled["value"]["text"]) == (37, 42, "Paris")
    assert len(labeled["value"]["labels"]) == 1 and labeled["value"]["labels"][0] in NER_LABELS
    assert labeled["prelabel"]["interactive"] is True

    # a span the annotator labeled is theirs: kept as it is, the model only adds others
    mine = {**selection, "id": "mine", "value": {"start": 0, "end": 13, "text": "Angela Merkel", "labels": ["ORG"]}}
    answer = ask(label_studio, ml.id, task_id, {"result": [mine]})
    kept = [r for r in answer["result"] if r.get("id") == "mine"]
    assert [r["value"] for r in kept] == [mine["value"]]
    others = [r["value"] for r in answer["result"] if r.get("id") != "mine"]
    assert all(v["end"] <= 0 or v["start"] >= 13 for v in others), others  # never over the annotator's span
    assert answer["meta"]["provenance"]["context"]["given"] == ["label"]


@pytest.fixture(scope="module")
def normal(label_studio, backend):
    """A task of an interactive project with its normal pre-annotation (Retrieve Predictions)."""
    rec = RecordingBackend(forward_to=backend.url).start()
    client = label_studio.sdk()
    project, [task_id], ml = make_project(label_studio, rec, PROMPT_CONFIG, "interactive_prompt", [MESSAGE],
                                          show_collab_predictions=False)
    client.actions.create(id="retrieve_tasks_predictions", project=project.id,
                          selected_items={"all": True, "excluded": []})
    [prediction] = wait_for(lambda: list(client.predictions.list(project=project.id)), 30, "the normal prediction")
    yield rec, task_id, ml, prediction
    rec.stop()


@pytest.mark.parametrize(("context", "why"), [
    ("not an object", "context must be an object, got str"),
    ({"result": "not a list"}, "context has no 'result' list of regions"),
    ({"result": [{"from_name": "no_such_control", "to_name": "text", "value": {"choices": ["billing"]}}]},
     "'no_such_control' is not a control the model fills"),
    ({"result": [{"from_name": "category", "to_name": "text", "value": {"choices": ["refunds"]}}]},
     "category: 'refunds' is not one of"),
    ({"result": [17, None]}, "result[1]: not a region with a 'value' object"),
    ({"result": [{"from_name": "answer", "to_name": "text", "value": {"text": 5}}]}, "unreadable value (TypeError)"),
])
def test_malformed_context_gives_the_normal_prediction_and_a_warning(label_studio, backend, normal, context, why):
    _, task_id, ml, prediction = normal
    ignored_before = metric_value(_metrics(backend), "prelabel_interactive_context_total", part="ignored")

    answer = ask(label_studio, ml.id, task_id, context)  # never a 5xx: LS would turn it into "errors"

    assert [(r["from_name"], r["value"]) for r in answer["result"]] == \
        [(r["from_name"], r["value"]) for r in prediction.result]
    assert any(why in message for message in answer["meta"]["provenance"]["context"]["ignored"])
    assert metric_value(_metrics(backend), "prelabel_interactive_context_total", part="ignored") > ignored_before
    assert f"task {task_id}: interactive context ignored: " in backend.log_text()
    assert any(why in line and "WARNING" in line for line in backend.log_text().splitlines()), backend.log_tail(20)


def test_interactive_answers_leave_no_trace(label_studio, recorder, redis_server) -> None:
    """A suggestion is not the task's pre-annotation: no prediction stored, no outcome, no job."""
    client = label_studio.sdk()
    # a text of its own: the cache is shared across projects, and other tests asked about MESSAGE
    text = f"{MESSAGE} Order {uuid.uuid4().hex[:6]}."
    project, [task_id], ml = make_project(label_studio, recorder, PROMPT_CONFIG, "interactive_prompt", [text],
                                          show_collab_predictions=False)
    conn = redis_server.client()
    jobs_before = conn.llen("rq:queue:prelabel")
    first = ask(label_studio, ml.id, task_id, {"result": []})
    again = ask(label_studio, ml.id, task_id, {"result": []})
    assert first["meta"]["provenance"]["cached"] is False and again["meta"]["provenance"]["cached"] is True
    assert list(client.predictions.list(task=task_id)) == []
    assert conn.hget(outcome_key(project_ref(label_studio.url, project.id)), str(task_id)) is None
    assert conn.llen("rq:queue:prelabel") == jobs_before


def _metrics(backend) -> str:
    import httpx

    return httpx.get(f"{backend.url}/metrics", timeout=30).text
