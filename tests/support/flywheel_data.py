"""Small datasets in the export format (train/val/test.jsonl + manifest.json) for the train tests.

The classification set is a spam filter whose labels (``junk`` / ``legit``) the instruction does
not name: a base model cannot guess them, a model fine-tuned on a few batches can. So "the
candidate beats the current model" is something training has to earn in the tests.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

INSTRUCTION = "Classify the message."
LABELS = ["junk", "legit"]
_SPAM = [
    "WIN a free {prize} now, click {link}",
    "Cheap {prize} for you, limited offer, reply YES",
    "You have been selected for a {prize}! Claim at {link}",
    "URGENT: your {prize} is waiting, send your card number",
]
_HAM = [
    "Are we still meeting at {time} for lunch?",
    "Thanks for the notes, see you on {day}",
    "Can you send me the report before {time}?",
    "Dinner at my place on {day}, bring {thing}",
]
_FILL = {
    "prize": ["iPhone", "cruise", "gift card", "laptop", "loan"],
    "link": ["bit.ly/x1", "win-now.biz", "prize.example"],
    "time": ["noon", "3pm", "9:30"],
    "day": ["Monday", "Friday", "the weekend"],
    "thing": ["salad", "the board game", "dessert"],
}


def _message(template: str, rng: random.Random) -> str:
    return template.format(**{key: rng.choice(values) for key, values in _FILL.items()})


def classification_records(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        spam = i % 2 == 0
        text = _message(rng.choice(_SPAM if spam else _HAM), rng)
        records.append({"instruction": INSTRUCTION, "input": text, "output": "junk" if spam else "legit"})
    return records


def write_dataset(root: Path, splits: dict[str, list[dict[str, Any]]], task_type: str = "classification",
                  labels: list[str] | None = None) -> Path:
    """Write the splits and a manifest with counts and sha256, as the export does."""
    root.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"task_type": task_type, "labels": LABELS if labels is None else labels, "splits": {}}
    for name, records in splits.items():
        path = root / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        manifest["splits"][name] = {"path": path.name, "count": len(records),
                                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return root


def spam_dataset(root: Path, train: int = 24, val: int = 6, test: int = 6) -> Path:
    records = classification_records(train + val + test)
    return write_dataset(root, {"train": records[:train], "val": records[train : train + val],
                                "test": records[train + val :]})
