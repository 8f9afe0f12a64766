"""Few-shot examples chosen by similarity to the task at hand.

The pool holds the guideline's examples, an optional JSONL file of ``{"data", "answer"}`` records,
and (when the backend can reach Label Studio) human-labeled tasks of the project. Each task gets
the ``k`` most similar examples by TF-IDF cosine over character n-grams, which works for short
queries and long documents alike and needs no model download.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from prelabel.label_config.guideline import Guideline
from prelabel.label_config.schema import OutputSchema
from prelabel.prediction.prompt import Example


def _joined(texts: dict[str, str]) -> str:
    return "\n".join(texts.values())


class FewShotPool:
    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples
        self._vectorizer: TfidfVectorizer | None = None
        self._matrix = None
        if len(examples) > 1:
            self._vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
            self._matrix = self._vectorizer.fit_transform([_joined(e.texts) for e in examples])

    def __len__(self) -> int:
        return len(self.examples)

    def select(self, texts: dict[str, str], k: int, exclude: str | None = None) -> list[Example]:
        """The ``k`` examples most similar to ``texts``, most similar last (closest to the task).

        ``exclude``: the task's own source (``task:<id>``): a labeled task is never shown its own answer.
        """
        if k <= 0 or not self.examples:
            return []
        query_text = _joined(texts)
        if self._vectorizer is None:
            order = np.arange(len(self.examples))
        else:
            similarity = (self._matrix @ self._vectorizer.transform([query_text]).T).toarray().ravel()
            # Stable order: highest similarity first, then pool order.
            order = np.lexsort((np.arange(len(similarity)), -similarity))
        # Never show a task its own answer.
        chosen = [self.examples[i] for i in order
                  if _joined(self.examples[i].texts) != query_text and self.examples[i].source != exclude][:k]
        return list(reversed(chosen))


def guideline_examples(guideline: Guideline, schema: OutputSchema) -> list[Example]:
    return [
        Example(schema.object_texts(example.data), example.answer, source=f"guideline:{index}")
        for index, example in enumerate(guideline.examples)
    ]


def file_examples(path: Path, schema: OutputSchema) -> list[Example]:
    """Examples from a JSONL file of ``{"data": {...}, "answer": {...}}`` lines."""
    examples = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                examples.append(Example(schema.object_texts(record["data"]), record["answer"], f"file:{number}"))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: bad few-shot example: {exc}") from exc
    return examples
