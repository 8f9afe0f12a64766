"""Exported datasets: validation against the manifest, chat messages, answer-masked tokenization.

The export writes a directory with ``train.jsonl``, ``val.jsonl``, ``test.jsonl`` (alpaca records:
``instruction``, ``input``, ``output``, optional ``system``) and ``manifest.json`` (``task_type``,
``labels``, ``splits``: {name: {path, count, sha256}}). Everything is checked before a model is
loaded so a bad export fails in a second, not after minutes of loading.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prelabel.errors import UserError

TASK_TYPES = ("classification", "multilabel", "extraction", "rating", "ranking", "generation")
SPLITS = ("train", "val", "test")
REQUIRED = ("instruction", "input", "output")
IGNORE_INDEX = -100


class DatasetError(UserError, ValueError):
    """An exported dataset that cannot be trained or evaluated on."""


@dataclass(frozen=True)
class Record:
    instruction: str
    input: str
    output: str
    system: str | None = None
    data: dict[str, Any] | None = field(default=None, compare=False)  # the task's data (backend evaluation)

    def messages(self) -> list[dict[str, str]]:
        """The prompt as chat messages; training, the engines and a served model all use these.

        The export writes the backend's rendered user message as ``instruction`` with an empty
        ``input``, so these messages are exactly what the backend sends.
        """
        user = self.instruction if not self.input else f"{self.instruction}\n\n{self.input}"
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [{"role": "user", "content": user}]


@dataclass
class Manifest:
    task_type: str
    labels: list[str]
    splits: dict[str, dict[str, Any]]
    sha256: str
    raw: dict[str, Any] = field(repr=False)


@dataclass
class Dataset:
    root: Path
    manifest: Manifest
    splits: dict[str, list[Record]]

    def split_sha256(self, name: str) -> str:
        return sha256_file(self.split_path(name))

    def split_path(self, name: str) -> Path:
        return _split_path(self.root, self.manifest, name)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(root: Path) -> Manifest:
    path = Path(root) / "manifest.json"
    if not Path(root).is_dir():
        raise DatasetError(f"dataset directory does not exist: {root}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing: is {root} a dataset written by the export?") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    task_type = raw.get("task_type")
    if task_type not in TASK_TYPES:
        raise DatasetError(f"{path}: task_type must be one of {', '.join(TASK_TYPES)}, got {task_type!r}")
    labels = raw.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(label, str) and label for label in labels):
        raise DatasetError(f"{path}: labels must be a list of non-empty strings")
    if task_type in ("classification", "multilabel") and len(labels) < 2:
        raise DatasetError(f"{path}: a {task_type} dataset needs at least two labels")
    splits = raw.get("splits") or {}
    if not isinstance(splits, dict):
        raise DatasetError(f"{path}: splits must be an object")
    return Manifest(task_type, labels, splits, sha256_file(path), raw)


def _split_path(root: Path, manifest: Manifest, name: str) -> Path:
    entry = manifest.splits.get(name) or {}
    return Path(root) / str(entry.get("path") or f"{name}.jsonl")


def load_dataset(root: Path, splits: tuple[str, ...] = SPLITS) -> Dataset:
    """Read and check the named splits; raises ``DatasetError`` with the file and line."""
    root = Path(root)
    manifest = load_manifest(root)
    loaded = {}
    for name in splits:
        path = _split_path(root, manifest, name)
        loaded[name] = read_split(path, manifest)
        _check_against_manifest(path, name, loaded[name], manifest)
    return Dataset(root, manifest, loaded)


def read_split(path: Path, manifest: Manifest) -> list[Record]:
    if not path.is_file():
        raise DatasetError(f"split file is missing: {path}")
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                records.append(_record(line, f"{path}:{number}", manifest))
    if not records:
        raise DatasetError(f"{path} has no records")
    return records


def _record(line: str, where: str, manifest: Manifest) -> Record:
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise DatasetError(f"{where}: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise DatasetError(f"{where}: expected an alpaca record object")
    missing = [key for key in REQUIRED if key not in raw]
    if missing:
        raise DatasetError(
            f"{where}: missing column(s) {', '.join(missing)}; alpaca records need "
            f"instruction, input, output (and optionally system); found {', '.join(sorted(raw)) or 'none'}"
        )
    for key in (*REQUIRED, "system"):
        if key in raw and raw[key] is not None and not isinstance(raw[key], str):
            raise DatasetError(f"{where}: column {key!r} must be a string, got {type(raw[key]).__name__}")
    if not raw["output"].strip():
        raise DatasetError(f"{where}: empty output")
    data = raw.get("data") if isinstance(raw.get("data"), dict) else None
    record = Record(raw["instruction"], raw["input"], raw["output"], raw.get("system") or None, data)
    problem = answer_problem(record.output, manifest)
    if problem:
        raise DatasetError(f"{where}: {problem}")
    return record


def json_answers(manifest: Manifest) -> bool:
    """Answers are the backend's JSON objects (exports since the one-prompt change), not bare labels."""
    return manifest.raw.get("answer_format") == "json"


def answer_value(output: str, manifest: Manifest) -> tuple[Any, str | None]:
    """The answer in a JSON-answer dataset: the object, or the value under ``answer_key``
    for one-control tasks; (None, why) when it is not such an answer. Parsed as the backend
    parses the model's answer."""
    from prelabel.label_config.answers import parse_answer
    from prelabel.label_config.controls import AnswerError

    try:
        answer, _ = parse_answer(output)
    except AnswerError as exc:
        return None, exc.message
    key = manifest.raw.get("answer_key")
    if not key:
        return answer, None
    if key not in answer:
        return None, f"answer has no {key!r} key"
    return answer[key], None


def answer_problem(output: str, manifest: Manifest) -> str | None:
    """Why a gold answer does not fit the task (``None`` when it does)."""
    if json_answers(manifest):
        value, problem = answer_value(output, manifest)
        if problem:
            return f"output {output[:80]!r}: {problem}"
        if manifest.task_type == "classification" and value not in manifest.labels:
            return f"output {output!r} is not one of the manifest labels {manifest.labels}"
        return None
    if manifest.task_type == "classification" and output not in manifest.labels:
        return f"output {output!r} is not one of the manifest labels {manifest.labels}"
    if manifest.task_type == "extraction":
        try:
            value = json.loads(output)
        except ValueError:
            return "extraction output must be a JSON object string"
        if not isinstance(value, dict):
            return "extraction output must be a JSON object string"
    return None


def _check_against_manifest(path: Path, name: str, records: list[Record], manifest: Manifest) -> None:
    entry = manifest.splits.get(name) or {}
    count, digest = entry.get("count"), entry.get("sha256")
    if count is not None and count != len(records):
        raise DatasetError(f"{path}: {len(records)} records but manifest.json says {count}; re-export")
    if digest and digest != sha256_file(path):
        raise DatasetError(f"{path} changed after export (sha256 differs from manifest.json); re-export")


@dataclass
class Tokenized:
    input_ids: list[int]
    labels: list[int]


def tokenize(record: Record, tokenizer: Any, cutoff_len: int) -> Tokenized:
    """Prompt (chat template, generation prompt) + answer + EOS; the loss sees only the answer.

    Prompt and answer are tokenized separately, exactly as at inference, where the model
    continues the prompt's tokens. A long prompt is cut from the left (the instruction head goes
    first, the text to label stays); an answer longer than the budget is cut too.
    """
    prompt = prompt_ids(tokenizer, record.messages())
    answer = tokenizer(record.output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    answer = answer[:cutoff_len]
    keep = cutoff_len - len(answer)
    prompt = prompt[-keep:] if keep > 0 else []
    return Tokenized(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer)


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)
