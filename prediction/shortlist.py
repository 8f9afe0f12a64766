"""Candidate labels for a task when a Choices control has too many labels to list them all.

With 77 intents (or a taxonomy of thousands) the full label list does not fit a small model's
context window, and even when it fits, a model choosing among hundreds of names does worse than
one choosing among ten. So the task is first matched against every label's *document* (its name,
definition, the guideline's examples, the project's human-labeled tasks with that label) by TF-IDF
cosine over character n-grams (robust to short queries and inflections, no model download),
and the model is asked to choose among the ``k`` best candidates plus ``none_of_these``. When it
answers ``none_of_these`` the control is left for a human (reason ``not_in_shortlist``).

A label scores the best similarity of any of its documents (nearest neighbour), so one matching
human example counts even if the label's name does not.
"""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from prelabel.label_config.controls import ChoicesField
from prelabel.label_config.guideline import Guideline
from prelabel.prediction.prompt import Example


def label_documents(control: ChoicesField, guideline: Guideline, examples: list[Example]) -> list[tuple[str, str]]:
    """(label, text) pairs describing each label: name, definition + hint, examples, labeled tasks."""
    definitions = guideline.labels.get(control.name, {})
    docs: list[tuple[str, str]] = []
    for label in control.labels:
        name = label.value.replace("_", " ").replace("-", " ")
        definition = definitions.get(label.value)
        docs.append((label.value, " ".join(filter(None, [name, definition.definition if definition else "",
                                                          label.hint or ""]))))
        for example in definition.examples if definition else []:
            docs.append((label.value, example))
    labels = set(control.label_values)
    for shown in examples:
        value = shown.answer.get(control.name)
        for chosen in value if isinstance(value, list) else [value]:
            if isinstance(chosen, str) and chosen in labels:
                docs.append((chosen, "\n".join(shown.texts.values())))
    return docs


class Shortlister:
    """The ``k`` labels of one control most similar to a task's text."""

    def __init__(self, control: ChoicesField, guideline: Guideline, examples: list[Example], k: int) -> None:
        self.control = control
        self.k = k
        docs = label_documents(control, guideline, examples)
        self.labels = control.label_values
        index = {label: i for i, label in enumerate(self.labels)}
        self._owner = np.array([index[label] for label, _ in docs])
        self._vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
        self._matrix = self._vectorizer.fit_transform([text for _, text in docs])

    def scores(self, text: str) -> np.ndarray:
        """Per label (config order): the best cosine similarity of any of its documents."""
        similarity = (self._matrix @ self._vectorizer.transform([text]).T).toarray().ravel()
        best = np.full(len(self.labels), -1.0)
        np.maximum.at(best, self._owner, similarity)
        return best

    def candidates(self, text: str) -> list[str]:
        """The ``k`` best labels, best first (ties: config order)."""
        scores = self.scores(text)
        order = np.lexsort((np.arange(len(scores)), -scores))[: self.k]
        return [self.labels[i] for i in order]
