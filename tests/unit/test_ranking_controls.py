"""Ranking, spot-check sampling and per-class agreement for every control type, not only the
first ``Choices``: "labeled" means a person submitted an annotation (any control), a
pre-annotation's task score (which combines its controls) is the uncertainty of configs without
a class, and span configs are compared span by span under each label."""

from __future__ import annotations

import pytest

from prelabel.quality.agreement import NONE, agreement
from prelabel.quality.spotcheck import NO_CLASS, sample
from prelabel.ranking.priority import rank
from prelabel.ranking.project import classification_control, span_control
from prelabel.ranking.signals import task_signals

TEXT = '<Text name="text" value="$text"/>'
SPAN = {"type": "labels", "from_name": "ent", "value": {"start": 0, "end": 3, "text": "Ann", "labels": ["PER"]}}
CONFIGS = {
    "labels": (f'<View>{TEXT}<Labels name="ent" toName="text"><Label value="PER"/><Label value="LOC"/></Labels></View>',
               SPAN),
    "rating": (f'<View>{TEXT}<Rating name="stars" toName="text" maxRating="5"/></View>',
               {"type": "rating", "from_name": "stars", "value": {"rating": 4}}),
    "number": (f'<View>{TEXT}<Number name="n" toName="text" min="0" max="9"/></View>',
               {"type": "number", "from_name": "n", "value": {"number": 3}}),
    "textarea": (f'<View>{TEXT}<TextArea name="summary" toName="text"/></View>',
                 {"type": "textarea", "from_name": "summary", "value": {"text": ["short"]}}),
    "multi": (f'<View>{TEXT}<Choices name="intent" toName="text"><Choice value="a"/><Choice value="b"/></Choices>'
              f'<Labels name="ent" toName="text"><Label value="PER"/></Labels></View>',
              SPAN),
}


def _tasks(region: dict) -> list[dict]:
    pre = {"id": 10, "model_version": "m@p-1", "score": 0.9, "result": [{**region, "to_name": "text"}]}
    shaky = {**pre, "id": 11, "score": 0.2}
    return [
        {"id": 1, "data": {"text": "Ann walks home"}, "predictions": [pre],
         "annotations": [{"id": 5, "result": [{**region, "to_name": "text"}]}]},  # labeled by a person
        {"id": 2, "data": {"text": "Ann runs to town", "prelabel_review": "passed"}, "predictions": [pre],
         "annotations": []},
        {"id": 3, "data": {"text": "Bob sat on a chair"}, "predictions": [shaky], "annotations": []},
        {"id": 4, "data": {"text": "nothing predicted yet"}, "predictions": [], "annotations": []},
        # a person's annotation with nothing marked ("no entity here") is a label too
        {"id": 5, "data": {"text": "quiet day"}, "predictions": [pre], "annotations": [{"id": 6, "result": []}]},
    ]


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_every_control_type_ranks_and_samples(kind: str) -> None:
    config, region = CONFIGS[kind]
    control, key, labels = classification_control(config)
    signals = [task_signals(t, control or "", key) for t in _tasks(region)]
    assert [s.labeled for s in signals] == [True, False, False, False, True]
    assert [s.score for s in signals[1:4]] == [0.9, 0.2, None]  # the task score, whatever the control

    ranking = rank(signals, labels)
    priority = dict(zip(ranking.ids, ranking.priority))
    assert priority[1] == priority[5] == 0.0  # labeled tasks keep no priority
    assert priority[3] > priority[2] > 0.0  # the less confident pre-annotation first
    source = dict(zip(ranking.ids, ranking.source))
    assert source[2] == source[3] == "score"

    chosen = sample(signals, n=4, seed=1)
    # pre-annotated and unlabeled (task 4 has nothing to check): the low-confidence one as abnormal,
    # the passed one in its stratum (no class label for these controls: one stratum)
    assert chosen.reasons == {2: f"class:{NO_CLASS}", 3: "low_confidence"}


def test_span_agreement_per_label() -> None:
    """Each human span counts under its label: agreed when the pre-annotation has the same span
    with the same label, else confused with the label it gave that span, or (none)."""
    config = CONFIGS["labels"][0]
    name, labels = span_control(config)
    assert (name, labels) == ("ent", ["PER", "LOC"])

    def region(start: int, end: int, label: str) -> dict:
        return {"from_name": "ent", "to_name": "text", "type": "labels",
                "value": {"start": start, "end": end, "labels": [label]}}

    tasks = [
        {"id": 1, "data": {"text": "Ann in Oslo"}, "annotations": [{"id": 1, "result": [region(0, 3, "PER"),
                                                                                        region(7, 11, "LOC")]}],
         "predictions": [{"id": 1, "model_version": "m@p-1", "score": 0.8,
                          "result": [region(0, 3, "PER"), region(7, 11, "PER")]}]},
        {"id": 2, "data": {"text": "Bob"}, "annotations": [{"id": 2, "result": [region(0, 3, "PER")]}],
         "predictions": [{"id": 2, "model_version": "m@p-1", "score": 0.8, "result": []}]},
        {"id": 3, "data": {"text": "not pre-annotated"}, "annotations": [{"id": 3, "result": [region(0, 3, "PER")]}],
         "predictions": []},
    ]
    signals = [task_signals(t, "", "text", name) for t in tasks]
    report = agreement(signals, labels)
    assert report.compared == 3  # task 3 has no pre-annotation to compare
    per, loc = report.classes
    assert (per.n, per.agreed, per.confusions) == (2, 1, [(NONE, 1)])
    assert (loc.n, loc.agreed, loc.confusions) == (1, 0, [("PER", 1)])
