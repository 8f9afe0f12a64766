"""Export: verified tasks -> records -> cleaning -> splits -> files + lineage + manifest, streamed.

One pass over the tasks writes each kept record to its split (and a lineage line: task id,
annotators, the pre-annotation's model and prompt version); a second pass over the written
files drops the classes under ``min_per_class`` (when ``rare_classes="drop"``) and appends
synthetic, marked training examples for classes under ``augment_below``. Everything is written
into a temporary folder next to the destination and moved into place only when the export
succeeded, so a failed export (unknown project, bad token, unmappable config, a crash) leaves no
partial files behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prelabel.contract import REFERENCE_FIELD, ModelVersion, RegionStamp, is_review, stamp_of
from prelabel.export.augment import METHODS, llm_paraphrases, load_synonyms, synonym_variants
from prelabel.export.dedupe import Deduper, content_hash
from prelabel.export.mapping import Mapper, MappingError, Record
from prelabel.export.record_pii import clean_record
from prelabel.export.split import SPLITS, Splitter
from prelabel.export.verify import Verified, VerifyOptions, verified_label
from prelabel.text import normalise

FORMATS = ("alpaca", "sharegpt", "pairwise", "classification-jsonl")
GROUP_BY = ("task", "annotator", "near_duplicate")  # or "data:<field>"
RARE = ("drop", "report")
DEFAULT_MAX_PER_USER = 200  # InstructGPT: at most ~200 prompts per submitting user
LINEAGE = "lineage.jsonl"


@dataclass
class ExportOptions:
    format: str = "alpaca"
    verify: VerifyOptions = field(default_factory=VerifyOptions)
    max_chars: int = 8000
    near_threshold: float | None = 0.9
    keep_near_duplicates: bool = False
    prefix_chars: int = 0
    max_per_annotator: int | None = None
    user_field: str | None = None  # task data field naming the submitting user (e.g. the prompt's author)
    max_per_user: int | None = None  # records per user; DEFAULT_MAX_PER_USER when user_field is set
    pii: str = "redact"  # redact | drop | keep
    min_per_class: int = 10
    rare_classes: str = "drop"  # drop | report: classes under min_per_class (classification)
    augment_below: int = 0  # synthetic train examples for classes with fewer train examples (0: off)
    augment_method: str = "synonyms"  # synonyms | llm
    augment_synonyms: Path | None = None  # own synonym table (default: the shipped one)
    group_by: str | None = None  # default: data:<user_field> when set (split by user), else task
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    prompt_style: str = "compact"  # the backend's prompt the records carry: compact (fine-tuning) or full
    include_reference: bool = False  # reference-set tasks (annotators --import-reference) as training data

    def __post_init__(self) -> None:
        if self.user_field and self.max_per_user is None:
            self.max_per_user = DEFAULT_MAX_PER_USER
        if self.group_by is None:
            self.group_by = f"data:{self.user_field}" if self.user_field else "task"

    def check(self, mapper: Mapper) -> None:
        if self.format not in FORMATS:
            raise MappingError(f"unknown format {self.format!r}; choose from {', '.join(FORMATS)}")
        if self.format == "pairwise" and mapper.task_type != "ranking":
            raise MappingError(f"pairwise needs a ranking config (List + Ranker); this one is {mapper.task_type}")
        if self.format == "classification-jsonl" and mapper.task_type not in ("classification", "multilabel", "rating"):
            raise MappingError(f"classification-jsonl needs a classification config; this one is {mapper.task_type}")
        if self.pii not in ("redact", "drop", "keep"):
            raise MappingError(f"pii must be redact, drop or keep, not {self.pii!r}")
        if self.group_by not in GROUP_BY and not str(self.group_by).startswith("data:"):
            raise MappingError(f"group_by must be one of {GROUP_BY} or data:<field>")
        if self.rare_classes not in RARE:
            raise MappingError(f"rare_classes must be drop or report, not {self.rare_classes!r}")
        if self.augment_method not in METHODS:
            raise MappingError(f"augment_method must be one of {', '.join(METHODS)}, not {self.augment_method!r}")
        if self.augment_below and mapper.task_type != "classification":
            raise MappingError(f"augmentation needs a classification config; this one is {mapper.task_type}")


def _rows(mapper: Mapper, record: Record, fmt: str, synthetic: bool = False) -> list[dict[str, Any]]:
    marker = {"synthetic": True} if synthetic else {}
    if fmt == "pairwise":  # the user's prompt is the instruction the outputs answer
        return [{"instruction": record.input, "input": "", "chosen": c, "rejected": r} for c, r in record.pairs or []]
    if fmt == "classification-jsonl":
        return [{"text": record.input, "label": record.label, "id": record.task_id, **marker}]
    if not record.output:
        return []
    if mapper.task_type == "ranking":  # the best output for its prompt: no backend answer to mirror
        return [{"instruction": record.input, "input": "", "output": record.output}]
    if mapper.task_type == "generation":  # a demonstration: the prompt is the instruction, plain text out
        if fmt == "sharegpt":
            return [{"conversations": [{"from": "human", "value": record.input},
                                       {"from": "gpt", "value": record.output}], "system": "", **marker}]
        return [{"instruction": record.input, "input": "", "output": record.output, "system": "", **marker}]
    system, *_, user = mapper.messages(record.texts or {})  # the backend's prompt (one rendering)
    data = mapper.task_data(record.texts or {})  # what the backend is given (evaluation through it)
    if fmt == "sharegpt":
        return [{"conversations": [{"from": "human", "value": user["content"]},
                                   {"from": "gpt", "value": record.output}],
                 "system": system["content"], "data": data, **marker}]
    return [{"instruction": user["content"], "input": "", "output": record.output, "system": system["content"],
             "data": data, **marker}]


def dataset_info(fmt: str) -> dict[str, Any]:
    """LLaMA-Factory's dataset_info.json entries for the three split files."""
    if fmt == "sharegpt":
        spec: dict[str, Any] = {"formatting": "sharegpt", "columns": {"messages": "conversations", "system": "system"},
                                "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                                         "assistant_tag": "gpt"}}
    elif fmt == "pairwise":
        spec = {"ranking": True, "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen",
                                             "rejected": "rejected"}}
    elif fmt == "classification-jsonl":
        spec = {"columns": {"prompt": "text", "response": "label"}}
    else:
        spec = {"columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system"}}
    return {f"prelabel_{split}": {"file_name": f"{split}.jsonl", **spec} for split in SPLITS}


def _hash_id(project: Any, person: Any) -> str:
    return hashlib.sha256(f"prelabel:{project}:{person}".encode()).hexdigest()[:12]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pre_annotation(task: dict[str, Any]) -> dict[str, Any] | None:
    """Model, prompt version and status of the task's latest pre-annotation (reviews excluded)."""
    predictions = [p for p in task.get("predictions") or [] if not is_review(p.get("model_version"))]
    if not predictions:
        return None
    latest = max(predictions, key=lambda p: p.get("id") or 0)
    version = str(latest.get("model_version") or "")
    parsed = ModelVersion.parse(version)
    stamp = next((stamp_of(r) for r in latest.get("result") or [] if stamp_of(r)), RegionStamp())
    return {"prediction_id": latest.get("id"), "model_version": version or None,
            "model": stamp.get("model") or parsed.model or None,
            "prompt_version": stamp.get("prompt_version") or parsed.prompt_version or None,
            "status": parsed.task_status}


def export_tasks(
    tasks: Iterable[dict[str, Any]], label_config: str, out_dir: Path, options: ExportOptions,
    project: dict[str, Any] | None = None, guideline: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write the dataset for ``tasks`` into ``out_dir`` (replaced only on success); returns it."""
    project = project or {}
    if options.prompt_style not in ("compact", "full"):
        raise MappingError(f"prompt_style must be compact or full, not {options.prompt_style!r}")
    mapper = Mapper(label_config, guideline, options.prompt_style)
    options.check(mapper)
    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest = _write(tasks, mapper, options, tmp, project, progress)
        (tmp / "dataset_info.json").write_text(json.dumps(dataset_info(options.format), indent=2))
        manifest["files"] = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


@dataclass
class _Pass:
    """What the first pass learned and the second one needs."""

    counts: Counter[str] = field(default_factory=Counter)
    labels: dict[str, Counter[str]] = field(default_factory=lambda: {split: Counter() for split in SPLITS})
    # classification: up to augment_below train inputs per class (augmentation sources)
    sources: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: defaultdict(list))
    texts: set[str] = field(default_factory=set)  # normalised kept inputs (a variant must be new)
    by_text: dict[str, _Text] = field(default_factory=dict)  # one entry per exported input text


@dataclass
class _Text:
    """One input text: the split and output (its hash) of its written copy, and every label's
    votes. Another label for the same text is held (``others``: its rows, lineage and class), not
    written, until all tasks are read; then the agreement rules keep one label or drop the text.
    Outputs are kept as hashes, so memory grows by one small entry per text."""

    split: str
    output: str
    label: Any
    votes: Counter[str] = field(default_factory=Counter)
    voters: int = 0
    others: dict[str, tuple[list[str], list[str], Any]] = field(default_factory=dict)


def _votes(verified: Verified) -> tuple[int, int]:
    """(annotators who gave the verified label, annotators of the task)."""
    voters = max(1, len(verified.annotators))
    return max(1, round(verified.agreement * voters)), voters


def _winner(text: _Text, verify: VerifyOptions) -> str | None:
    """The label the agreement rules pick among a text's tasks: a strict majority of all their
    annotators, at least ``min_agreement`` of them, no tie; None: the text is dropped."""
    (best, count), *rest = text.votes.most_common()
    share = count / text.voters
    if (rest and rest[0][1] == count) or share <= 0.5 or share < verify.min_agreement:
        return None
    return best


def _write(tasks: Iterable[dict[str, Any]], mapper: Mapper, options: ExportOptions, tmp: Path,
           project: dict[str, Any], progress: Callable[[int], None] | None) -> dict[str, Any]:
    """Both passes (``_FirstPass`` over the tasks, then ``_second_pass``); the manifest."""
    stage = tmp / ".stage"
    stage.mkdir()
    first = _FirstPass(mapper, options, project.get("id"), stage)
    try:
        for task in tasks:
            if progress:
                progress(1)
            first.add(task)
    finally:
        first.close()
    return _second_pass(first, tmp, project)


class _FirstPass:
    """One pass over the tasks: each verified, cleaned, capped and deduplicated record written to
    its split's staging file; every task left out is counted under its reason (``counts``)."""

    def __init__(self, mapper: Mapper, options: ExportOptions, project_id: Any, stage: Path) -> None:
        self.mapper, self.options, self.project_id, self.stage = mapper, options, project_id, stage
        self.state = _Pass()
        self.counts = self.state.counts
        self.pii_found: Counter[str] = Counter()
        self.per_annotator: Counter[Any] = Counter()
        self.per_user: Counter[Any] = Counter()
        self.annotators: set[str] = set()
        self.versions: Counter[str] = Counter()
        self.deduper = Deduper(options.near_threshold, options.prefix_chars, keep_near=options.keep_near_duplicates)
        self.splitter = Splitter(options.ratios, options.seed)
        self.files = {split: (stage / f"{split}.jsonl").open("w", encoding="utf-8") for split in SPLITS}
        self.lineage = {split: (stage / f"{split}.lineage.jsonl").open("w", encoding="utf-8") for split in SPLITS}

    def close(self) -> None:
        for handle in [*self.files.values(), *self.lineage.values()]:
            handle.close()

    def add(self, task: dict[str, Any]) -> None:
        self.counts["tasks"] += 1
        for prediction in task.get("predictions") or []:
            self.versions[str(prediction.get("model_version") or "")] += 1
        admitted = self._admit(task)
        if admitted is None:
            return
        record, verified = admitted
        owners = self._owners(task, verified)
        if owners is not None:
            self._place(task, record, verified, *owners)

    def _admit(self, task: dict[str, Any]) -> tuple[Record, Verified] | None:
        """The task's record when its label is verified, mappable, not empty, not too long, and its
        PII handled as ``options.pii`` says; else None, the reason counted."""
        options, counts = self.options, self.counts
        if (task.get("data") or {}).get(REFERENCE_FIELD) and not options.include_reference:
            counts["reference_task"] += 1  # the operator's answer key for screening, not a training label
            return None
        verified, why = verified_label(task, options.verify)
        if verified is None:
            counts[why] += 1
            return None
        record, why = self.mapper.checked_record(task, verified.result)
        if record is None:
            counts[why] += 1
            return None
        if not record.input.strip():
            counts["empty_text"] += 1
            return None
        if len(record.input) + len(record.output) > options.max_chars:
            counts["too_long"] += 1
            return None
        if options.pii != "keep":
            record, found = clean_record(self.mapper, record)
            if found:
                self.pii_found.update(found)
                if options.pii == "drop":
                    counts["pii_dropped"] += 1
                    return None
                counts["pii_redacted"] += 1
        return record, verified

    def _owners(self, task: dict[str, Any], verified: Verified) -> tuple[Any, Any] | None:
        """(annotator, user) of a record within the per-annotator and per-user caps; None over one."""
        options = self.options
        annotator = verified.annotators[0] if verified.annotators else None
        if options.max_per_annotator and self.per_annotator[annotator] >= options.max_per_annotator:
            self.counts["over_annotator_cap"] += 1
            return None
        user_key = options.user_field
        user = (task.get("data") or {}).get(user_key) if user_key else None
        if user_key and user is None:
            self.counts["no_user_field"] += 1
        elif options.max_per_user and self.per_user[user] >= options.max_per_user:
            self.counts["over_user_cap"] += 1
            return None
        return annotator, user

    def _place(self, task: dict[str, Any], record: Record, verified: Verified, annotator: Any, user: Any) -> None:
        """Deduplicate the record and write it to its split (a text stays in one), or hold another
        label for a text already written until every task is read (``_resolve`` picks one)."""
        state, mapper = self.state, self.mapper
        text_key, output_key = content_hash(record.input), hashlib.sha256(record.output.encode()).hexdigest()
        seen = state.by_text.get(text_key)
        agreeing, voters = _votes(verified)
        if seen is not None and mapper.task_type != "generation":  # one label per text (demonstrations: many)
            seen.votes[output_key] += agreeing
            seen.voters += voters
            if output_key == seen.output or output_key in seen.others:
                self.counts["exact_duplicate"] += 1
                return
        held = seen if seen is not None and mapper.task_type != "generation" else None
        duplicate, near_group = (None, text_key) if held is not None else \
            self.deduper.check(str(record.task_id), f"{record.input}\n{record.output}")
        if duplicate:
            self.counts[duplicate] += 1
            return
        self.per_annotator[annotator] += 1
        if user is not None:
            self.per_user[user] += 1
        self.annotators.update(_hash_id(self.project_id, a) for a in verified.annotators)
        data = task.get("data") or {}
        group = _group(self.options.group_by or "task", annotator, near_group, data, record.task_id)
        stratum = json.dumps(record.label) if record.label is not None else "all"
        split = seen.split if seen is not None else self.splitter.assign(stratum, group)
        rows = _rows(mapper, record, self.options.format)
        trace = {"task_id": record.task_id, "label": record.label,
                 "annotators": sorted(_hash_id(self.project_id, a) for a in verified.annotators),
                 "user": None if user is None else _hash_id(self.project_id, f"user:{user}"),
                 "pre_annotation": pre_annotation(task), "synthetic": False, "_text": text_key}
        if held is not None:  # a conflicting label: held until every task is read
            held.others[output_key] = ([json.dumps(row, ensure_ascii=False) + "\n" for row in rows],
                                       [json.dumps(trace, ensure_ascii=False) + "\n"] * len(rows),
                                       record.label)
            return
        if seen is None:
            state.by_text[text_key] = _Text(split, output_key, record.label, Counter({output_key: agreeing}), voters)
        self._emit(split, record, rows, trace)

    def _emit(self, split: str, record: Record, rows: list[dict[str, Any]], trace: dict[str, Any]) -> None:
        """Write the record's rows and lineage; note its labels and, for augmentation, its text."""
        state = self.state
        for row in rows:
            self.files[split].write(json.dumps(row, ensure_ascii=False) + "\n")
            self.lineage[split].write(json.dumps(trace, ensure_ascii=False) + "\n")
        self.counts["written_tasks"] += 1
        for label in ([record.label] if isinstance(record.label, str) else record.label or []):
            state.labels[split][label] += 1
        if self.mapper.task_type == "classification" and self.options.augment_below:
            state.texts.add(normalise(record.input))  # no variant may equal a val/test text
            klass = record.label
            if not isinstance(klass, str):  # Mapper._record gives every classification record its class
                raise RuntimeError(f"task {record.task_id}: a classification record without its class (a bug)")
            if split == "train" and len(state.sources[klass]) < self.options.augment_below:
                state.sources[klass].append((record.task_id, record.input))


def _rare_classes(state: _Pass, mapper: Mapper, options: ExportOptions) -> tuple[Counter[str], dict[str, int],
                                                                                  list[str]]:
    """(kept rows per label, the labels under ``min_per_class`` with their count, those dropped)."""
    totals: Counter[str] = Counter()
    for split in SPLITS:
        totals.update(state.labels[split])
    rare = {label: n for label, n in totals.items() if n < options.min_per_class}
    if mapper.labels:
        rare.update({label: 0 for label in mapper.labels if label not in totals})
    dropped = sorted(rare) if options.rare_classes == "drop" and mapper.task_type == "classification" else []
    return totals, rare, dropped


def _second_pass(first: _FirstPass, tmp: Path, project: dict[str, Any]) -> dict[str, Any]:
    """Resolve held labels, drop rare classes, add synthetic examples, move the files into ``tmp``;
    the manifest of the whole export."""
    state, mapper, options, counts = first.state, first.mapper, first.options, first.counts
    decisions = _resolve(state, options.verify, mapper.task_type)
    totals, rare, dropped = _rare_classes(state, mapper, options)
    rows_per_split = _finish(first.stage, tmp, set(dropped), state, decisions)
    synthetic = _augment(mapper, options, tmp, state, set(dropped)) if options.augment_below else Counter()
    rows_per_split["train"] += sum(synthetic.values())
    counts["written_rows"] = sum(rows_per_split.values())
    if synthetic:
        counts["synthetic"] = sum(synthetic.values())
    shutil.rmtree(first.stage)
    labels = [label for label in mapper.labels if label not in dropped] if dropped else mapper.labels
    return {
        "format": options.format,
        "task_type": mapper.task_type,
        "labels": labels,
        "project": {"id": project.get("id"), "title": project.get("title")},
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "prompt_version": mapper.ctx.prompt.version,
        **mapper.answer_spec(),
        "guideline": mapper.ctx.guideline_name,
        "seed": options.seed,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items() if k != "verify"}
        | {"verify": asdict(options.verify)},
        "counts": dict(counts),
        "pii_found": dict(first.pii_found),
        "rare_classes": rare,
        "dropped_classes": {label: totals.get(label, 0) for label in dropped},
        "splits": {split: {"path": f"{split}.jsonl", "count": rows_per_split[split],
                           "label_distribution": {k: v for k, v in state.labels[split].items() if k not in dropped},
                           **({"synthetic": sum(synthetic.values()),
                               "synthetic_distribution": dict(synthetic)} if split == "train" and synthetic else {})}
                   for split in SPLITS},
        "lineage": LINEAGE,
        "annotators": sorted(first.annotators),
        "pre_annotation_model_versions": dict(first.versions),
    }


def _group(group_by: str, annotator: Any, near_group: str, data: dict[str, Any], task_id: int) -> str | None:
    if group_by == "task":
        return None
    if group_by == "annotator":
        return f"a:{annotator}"
    if group_by == "near_duplicate":
        return f"n:{near_group}"
    value = data.get(group_by[5:])
    return f"d:{value}" if value is not None else f"t:{task_id}"


def _labels(label: Any) -> list[str]:
    return [label] if isinstance(label, str) else list(label or [])


def _resolve(state: _Pass, verify: VerifyOptions, task_type: str) -> dict[str, str | None]:
    """Texts labelled differently in several tasks -> the label kept (None: dropped), counted;
    the split's class counts and augmentation sources follow the decision."""
    decisions: dict[str, str | None] = {}
    for key, text in state.by_text.items():
        if not text.others:
            continue
        winner = decisions[key] = _winner(text, verify)
        state.counts["conflict_resolved" if winner is not None else "conflict_dropped"] += 1
        if winner is None:
            state.counts["written_tasks"] -= 1
        if winner == text.output:
            continue
        for label in _labels(text.label):
            state.labels[text.split][label] -= 1
        if winner is not None:
            for label in _labels(text.others[winner][2]):
                state.labels[text.split][label] += 1
        if task_type == "classification":  # a dropped or outvoted text is no augmentation source
            for klass, sources in state.sources.items():
                state.sources[klass] = [s for s in sources if content_hash(s[1]) != key]
    return decisions


def _finish(stage: Path, tmp: Path, dropped: set[str], state: _Pass,
            decisions: dict[str, str | None]) -> Counter[str]:
    """Copy the staged rows into the split files, without the dropped classes, with each
    conflicting text's decided label (or without the text), and write the lineage side file (one
    line per row: its split and line number, task, pre-annotation)."""
    rows: Counter[str] = Counter()
    with (tmp / LINEAGE).open("w", encoding="utf-8") as trace_out:
        for split in SPLITS:
            with ((stage / f"{split}.jsonl").open(encoding="utf-8") as rows_in,
                  (stage / f"{split}.lineage.jsonl").open(encoding="utf-8") as trace_in,
                  (tmp / f"{split}.jsonl").open("w", encoding="utf-8") as rows_out):
                for row, line in _decided(zip(rows_in, trace_in), state, decisions):
                    trace = json.loads(line)
                    trace.pop("_text", None)
                    if trace["label"] in dropped:
                        state.counts["rare_class_dropped"] += 1
                        continue
                    rows[split] += 1
                    rows_out.write(row)
                    trace_out.write(json.dumps({"split": split, "line": rows[split], **trace}, ensure_ascii=False)
                                    + "\n")
    for label in dropped:
        state.sources.pop(label, None)
    return rows


def _decided(staged: Iterable[tuple[str, str]], state: _Pass,
             decisions: dict[str, str | None]) -> Iterable[tuple[str, str]]:
    """The staged (row, lineage) lines with each conflicting text's decision applied: its rows
    as written, the winning label's rows instead, or none."""
    replaced: set[str] = set()
    for row, line in staged:
        key = json.loads(line).get("_text")
        if key not in decisions:
            yield row, line
            continue
        winner = decisions[key]
        text = state.by_text[key]
        if winner == text.output:
            yield row, line
        elif winner is not None and key not in replaced:
            replaced.add(key)
            yield from zip(text.others[winner][0], text.others[winner][1])

def _augment(mapper: Mapper, options: ExportOptions, tmp: Path, state: _Pass, dropped: set[str]) -> Counter[str]:
    """Append synthetic examples (marked) to train for classes with fewer than ``augment_below``."""
    rng = random.Random(f"prelabel-augment:{options.seed}")
    table = load_synonyms(options.augment_synonyms) if options.augment_method == "synonyms" else None
    made: Counter[str] = Counter()
    train_rows = sum(state.labels["train"].values()) - sum(state.labels["train"][d] for d in dropped)
    with (tmp / "train.jsonl").open("a", encoding="utf-8") as rows_out, \
            (tmp / LINEAGE).open("a", encoding="utf-8") as trace_out:
        for label in sorted(state.sources):
            have = state.labels["train"][label]
            needed = options.augment_below - have
            sources = state.sources[label]
            if needed <= 0 or not sources:
                continue
            texts = [text for _, text in sources]
            if table is not None:
                variants = synonym_variants(texts, needed, table, rng, state.texts)
            else:
                from prelabel.settings import get_settings

                variants = llm_paraphrases(texts, needed, state.texts, get_settings())
            state.counts["augment_shortfall"] += needed - len(variants)
            for index, variant in variants:
                source_id = sources[index][0]
                for row in _rows(mapper, mapper.synthetic_record(source_id, variant, label), options.format, True):
                    train_rows += 1
                    rows_out.write(json.dumps(row, ensure_ascii=False) + "\n")
                    trace_out.write(json.dumps({"split": "train", "line": train_rows, "task_id": source_id,
                                                "label": label, "synthetic": True,
                                                "method": options.augment_method}) + "\n")
                made[label] += 1
    if not state.counts["augment_shortfall"]:
        del state.counts["augment_shortfall"]
    return made


def export_project(project_id: int | str, out_dir: Path | str, *, fmt: str = "alpaca", ls_url: str | None = None,
                   ls_token: str | None = None, guideline: str | None = None,
                   progress: Callable[[int], None] | None = None, **options: Any) -> Path:
    """``export_studio_project`` with the options as flat keywords (a flywheel config's ``export``
    section): ``format`` names the format too, the verification ones go to ``VerifyOptions``."""
    fmt = options.pop("format", fmt)
    verify = {k: options.pop(k) for k in ("ground_truth_only", "min_annotators", "min_agreement") if k in options}
    export_options = ExportOptions(format=fmt, verify=VerifyOptions(**verify), **options)
    return export_studio_project(project_id, out_dir, export_options, ls_url=ls_url, ls_token=ls_token,
                                 guideline=guideline, progress=progress)


def export_studio_project(project_id: int | str, out_dir: Path | str, options: ExportOptions, *,
                          ls_url: str | None = None, ls_token: str | None = None, guideline: str | None = None,
                          progress: Callable[[int], None] | None = None) -> Path:
    """Export a Label Studio project (URL/token default to LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY)."""
    from prelabel.export.source import SourceError, project_info, project_tasks
    from prelabel.settings import get_settings
    from prelabel.studio.access import AccessRefused, connect, for_operator

    try:
        client = connect(for_operator(get_settings(), ls_url, ls_token))
    except AccessRefused as exc:
        raise SourceError(f"{exc} (set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, or pass the URL and token)") from None
    project = project_info(client, int(project_id))
    return export_tasks(project_tasks(client, int(project_id)), project["label_config"], Path(out_dir),
                        options, {"id": project["id"], "title": project.get("title")}, guideline, progress)

