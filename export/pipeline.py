"""Export: verified tasks -> records -> cleaning -> splits -> files + manifest, streamed.

Everything is written into a temporary folder next to the destination and moved into place
only when the export succeeded, so a failed export (unknown project, bad token, unmappable
config, a crash) leaves no partial files behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prelabel.export.dedupe import Deduper
from prelabel.export.mapping import Mapper, MappingError, Record
from prelabel.export.pii import find_pii, redact
from prelabel.export.split import SPLITS, Splitter
from prelabel.export.verify import VerifyOptions, verified_label

FORMATS = ("alpaca", "sharegpt", "pairwise", "classification-jsonl")
GROUP_BY = ("task", "annotator", "near_duplicate")  # or "data:<field>"


@dataclass
class ExportOptions:
    format: str = "alpaca"
    verify: VerifyOptions = field(default_factory=VerifyOptions)
    max_chars: int = 8000
    near_threshold: float | None = 0.9
    keep_near_duplicates: bool = False
    prefix_chars: int = 0
    max_per_annotator: int | None = None
    pii: str = "redact"  # redact | drop | keep
    min_per_class: int = 10
    group_by: str = "task"
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    prompt_style: str = "compact"  # the backend's prompt the records carry: compact (fine-tuning) or full

    def check(self, mapper: Mapper) -> None:
        if self.format not in FORMATS:
            raise MappingError(f"unknown format {self.format!r}; choose from {', '.join(FORMATS)}")
        if self.format == "pairwise" and mapper.task_type != "ranking":
            raise MappingError(f"pairwise needs a ranking config (List + Ranker); this one is {mapper.task_type}")
        if self.format == "classification-jsonl" and mapper.task_type not in ("classification", "multilabel", "rating"):
            raise MappingError(f"classification-jsonl needs a classification config; this one is {mapper.task_type}")
        if self.pii not in ("redact", "drop", "keep"):
            raise MappingError(f"pii must be redact, drop or keep, not {self.pii!r}")
        if self.group_by not in GROUP_BY and not self.group_by.startswith("data:"):
            raise MappingError(f"group_by must be one of {GROUP_BY} or data:<field>")


def _rows(mapper: Mapper, record: Record, fmt: str) -> list[dict[str, Any]]:
    if fmt == "pairwise":
        instruction = mapper.ctx.guideline.task.strip()
        return [{"instruction": instruction, "input": record.input, "chosen": c, "rejected": r}
                for c, r in record.pairs or []]
    if fmt == "classification-jsonl":
        return [{"text": record.input, "label": record.label, "id": record.task_id}]
    if not record.output:
        return []
    if mapper.task_type == "ranking":  # the best output for its prompt: no backend answer to mirror
        return [{"instruction": mapper.ctx.guideline.task.strip(), "input": record.input, "output": record.output}]
    system, *_, user = mapper.messages(record.texts or {})  # the backend's prompt (one rendering)
    data = mapper.task_data(record.texts or {})  # what the backend is given (evaluation through it)
    if fmt == "sharegpt":
        return [{"conversations": [{"from": "human", "value": user["content"]},
                                   {"from": "gpt", "value": record.output}],
                 "system": system["content"], "data": data}]
    return [{"instruction": user["content"], "input": "", "output": record.output, "system": system["content"],
             "data": data}]


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


def _write(tasks: Iterable[dict[str, Any]], mapper: Mapper, options: ExportOptions, tmp: Path,
           project: dict[str, Any], progress: Callable[[int], None] | None) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    pii_found: Counter[str] = Counter()
    per_annotator: Counter[Any] = Counter()
    annotators: set[str] = set()
    versions: Counter[str] = Counter()
    labels: dict[str, Counter[str]] = {split: Counter() for split in SPLITS}
    rows_per_split: Counter[str] = Counter()
    deduper = Deduper(options.near_threshold, options.prefix_chars, keep_near=options.keep_near_duplicates)
    splitter = Splitter(options.ratios, options.seed)
    files = {split: (tmp / f"{split}.jsonl").open("w", encoding="utf-8") for split in SPLITS}
    try:
        for task in tasks:
            counts["tasks"] += 1
            if progress:
                progress(1)
            for prediction in task.get("predictions") or []:
                versions[str(prediction.get("model_version") or "")] += 1
            verified, why = verified_label(task, options.verify)
            if verified is None:
                counts[why] += 1
                continue
            record = mapper.record(task, verified.result)
            if record is None:
                counts["unmappable"] += 1
                continue
            if len(record.input) + len(record.output) > options.max_chars:
                counts["too_long"] += 1
                continue
            if options.pii != "keep":
                found = find_pii(record.input) + find_pii(record.output)
                if found:
                    pii_found.update(found)
                    if options.pii == "drop":
                        counts["pii_dropped"] += 1
                        continue
                    record.input, _ = redact(record.input)
                    record.output, _ = redact(record.output)
                    record.texts = {name: redact(text)[0] for name, text in (record.texts or {}).items()}
                    record.pairs = [(redact(c)[0], redact(r)[0]) for c, r in record.pairs or []] or record.pairs
                    counts["pii_redacted"] += 1
            annotator = verified.annotators[0] if verified.annotators else None
            if options.max_per_annotator and per_annotator[annotator] >= options.max_per_annotator:
                counts["over_annotator_cap"] += 1
                continue
            duplicate, near_group = deduper.check(str(record.task_id), f"{record.input}\n{record.output}")
            if duplicate:
                counts[duplicate] += 1
                continue
            per_annotator[annotator] += 1
            annotators.update(_hash_id(project.get("id"), a) for a in verified.annotators)
            group = {"task": None, "annotator": f"a:{annotator}", "near_duplicate": f"n:{near_group}"}.get(
                options.group_by, f"d:{(task.get('data') or {}).get(options.group_by[5:], record.task_id)}")
            stratum = json.dumps(record.label) if record.label is not None else "all"
            split = splitter.assign(stratum, group, key=str(record.task_id))
            rows = _rows(mapper, record, options.format)
            for row in rows:
                files[split].write(json.dumps(row, ensure_ascii=False) + "\n")
            rows_per_split[split] += len(rows)
            counts["written_tasks"] += 1
            counts["written_rows"] += len(rows)
            for label in ([record.label] if isinstance(record.label, str) else record.label or []):
                labels[split][label] += 1
    finally:
        for handle in files.values():
            handle.close()
    totals = Counter()
    for split in SPLITS:
        totals.update(labels[split])
    rare = {label: n for label, n in totals.items() if n < options.min_per_class}
    if mapper.labels:
        rare.update({label: 0 for label in mapper.labels if label not in totals})
    return {
        "format": options.format,
        "task_type": mapper.task_type,
        "labels": mapper.labels,
        "project": {"id": project.get("id"), "title": project.get("title")},
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "prompt_version": mapper.ctx.prompt.version,
        **mapper.answer_spec(),
        "guideline": mapper.ctx.guideline_name,
        "seed": options.seed,
        "options": {k: v for k, v in asdict(options).items() if k != "verify"} | {"verify": asdict(options.verify)},
        "counts": dict(counts),
        "pii_found": dict(pii_found),
        "rare_classes": rare,
        "splits": {split: {"path": f"{split}.jsonl", "count": rows_per_split[split],
                           "label_distribution": dict(labels[split])} for split in SPLITS},
        "annotators": sorted(annotators),
        "pre_annotation_model_versions": dict(versions),
    }


def export_project(project_id: int | str, out_dir: Path | str, *, fmt: str = "alpaca", ls_url: str | None = None,
                   ls_token: str | None = None, guideline: str | None = None,
                   progress: Callable[[int], None] | None = None, **options: Any) -> Path:
    """Export a Label Studio project (URL/token default to LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY)."""
    from label_studio_sdk.client import LabelStudio

    from prelabel.export.source import SourceError, project_info, project_tasks
    from prelabel.settings import get_settings

    settings = get_settings()
    url = ls_url or settings.label_studio_url
    token = ls_token or (settings.label_studio_api_key.get_secret_value() if settings.label_studio_api_key else None)
    if not url or not token:
        raise SourceError("set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (or pass the URL and token)")
    client = LabelStudio(base_url=url, api_key=token)
    project = project_info(client, int(project_id))
    fmt = options.pop("format", fmt)
    verify = {k: options.pop(k) for k in ("ground_truth_only", "min_annotators", "min_agreement") if k in options}
    export_options = ExportOptions(format=fmt, verify=VerifyOptions(**verify), **options)
    return export_tasks(project_tasks(client, int(project_id)), project["label_config"], Path(out_dir),
                        export_options, {"id": project["id"], "title": project.get("title")}, guideline, progress)

