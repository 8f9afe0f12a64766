#!/usr/bin/env python
"""What the default export writes from real Label Studio projects: PII, conflicting labels, reference tasks.

Starts Label Studio 1.23.2 in a temp dir (or uses ``--url``/``--token``), creates two projects
with human annotations imported, exports each with the default options (``--pii redact``;
``min_per_class`` 0 so no small class is dropped) and counts what came out:

* ``flight_slots``: 60 booking requests with ISO dates and times; every third one starts with
  who is asking ("This is Mr. Tom Baker, call me on 415-555-0134." / an e-mail address). Counted:
  records, records whose text and date slot still hold their date, records that still contain a
  name, phone or e-mail of the sample, what the manifest says was found.
* ``search_intent``: 40 queries each labelled in two tasks with different intents (a 1:1 tie),
  20 in three tasks (two say informational, one transactional), 60 labelled once, and 2
  reference tasks (``data.prelabel_reference``, an imported answer key). Counted: records, texts
  written more than once, texts in more than one split, reference texts exported.

The same script runs against any checkout: ``python benchmarks/export_real_project.py`` with
that checkout's environment (the before/after figures in ``benchmarks/results/export_real_project.txt``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "label_config" / "templates"
CITIES = [("Boston", "Denver"), ("London", "Tokyo"), ("Madrid", "Paris"), ("Chicago", "Miami"), ("Berlin", "Rome"),
          ("Seattle", "Austin")]
PEOPLE = [("Mr. Tom Baker", "415-555-0134"), ("Ms. Ana Silva", "212-555-0187"), ("Dr. Lee Park", "650-555-0110")]
EMAILS = ["tom.baker@example.com", "ana.silva@example.org", "lee.park@example.net"]


def flight_tasks() -> tuple[list[dict[str, Any]], list[str]]:
    tasks, personal = [], []
    for i in range(60):
        here, there = CITIES[i % len(CITIES)]
        date, time = f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}", f"{6 + i % 14:02d}:{(i * 7) % 60:02d}"
        text = f"Book a flight from {here} to {there} on {date} at {time}, {1 + i % 3} passengers"
        if i % 3 == 0:
            name, phone = PEOPLE[i // 3 % len(PEOPLE)]
            who = f"This is {name}, call me on {phone}." if i % 2 == 0 else f"My email is {EMAILS[i // 3 % 3]}."
            personal += [name.split(". ", 1)[1], phone, EMAILS[i // 3 % 3]]
            text = f"{who} {text}"
        slots = {"departure_city": here, "arrival_city": there, "date": date, "time": time}
        result = [{"from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": ["book_flight"]}},
                  {"from_name": "class", "to_name": "text", "type": "choices", "value": {"choices": ["unspecified"]}},
                  {"from_name": "passenger_count", "to_name": "text", "type": "number",
                   "value": {"number": 1 + i % 3}}]
        result += [{"from_name": k, "to_name": "text", "type": "textarea", "value": {"text": [v]}}
                   for k, v in slots.items()]
        tasks.append({"data": {"text": text}, "annotations": [{"result": result}]})
    return tasks, sorted(set(personal))


def intent_tasks() -> list[dict[str, Any]]:
    def task(text: str, label: str, **extra: Any) -> dict[str, Any]:
        region = {"from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": [label]}}
        return {"data": {"text": text, **extra}, "annotations": [{"result": [region]}]}

    products = ["running shoes", "a laptop", "headphones", "a coffee maker", "a phone case", "winter jacket",
                "a tablet", "a backpack", "sunglasses", "a desk lamp"]
    places = ["paris", "tokyo", "berlin", "madrid", "chicago", "sydney", "lisbon", "seoul", "vienna", "dublin"]
    tasks = []
    for i in range(40):  # the same text, two intents (the seed's own example of a confusable pair)
        text = f"{products[i % 10]} price in {places[i // 10 + (i % 3)]} shops {i}"
        tasks += [task(text, "informational"), task(text, "transactional")]
    for i in range(20):  # two of three say informational
        text = f"compare {products[i % 10]} offers near {places[i % 10]} number {i}"
        tasks += [task(text, "informational"), task(text, "transactional"), task(text, "informational")]
    for i in range(60):
        label = ("navigational", "informational", "educational")[i % 3]
        text = (f"{places[i % 10]} city portal login {i}", f"weather in {places[i % 10]} day {i}",
                f"learn {products[i % 10]} repair lesson {i}")[i % 3]
        tasks.append(task(text, label))
    tasks += [task("reference query one: how tall is the eiffel tower", "informational", prelabel_reference="ref-1"),
              task("reference query two: gmail sign in", "navigational", prelabel_reference="ref-1")]
    return tasks


def rows_of(out: Path) -> dict[str, list[dict[str, Any]]]:
    return {s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "val", "test")}


def export(project_id: int, url: str, token: str, out: Path, guideline: str) -> tuple[dict, dict]:
    from prelabel.export.pipeline import ExportOptions, export_studio_project

    export_studio_project(project_id, out, ExportOptions(min_per_class=0), ls_url=url, ls_token=token,
                          guideline=guideline)
    return json.loads((out / "manifest.json").read_text()), rows_of(out)


def run(url: str, token: str, sdk: Any, workdir: Path) -> dict[str, Any]:
    flights, personal = flight_tasks()
    config = (TEMPLATES / "flight_slots.xml").read_text()
    project = sdk.projects.create(title="export: flight slots", label_config=config)
    sdk.projects.import_tasks(id=project.id, request=flights)
    manifest, rows = export(project.id, url, token, workdir / "flights", "flight_slots")
    records = [r for rs in rows.values() for r in rs]
    dated = sum(1 for r in records if re.search(r" on 2025-\d\d-\d\d at \d\d:\d\d", r["data"]["text"]))
    slot_ok = sum(1 for r in records if re.fullmatch(r"2025-\d\d-\d\d", json.loads(r["output"])["date"]))
    leaked = sum(1 for r in records if any(p in json.dumps(r) for p in personal))
    flight = {"tasks": len(flights), "records": len(records), "text_keeps_its_date": dated,
              "date_slot_keeps_its_date": slot_ok, "records_with_the_samples_personal_data": leaked,
              "pii_found": manifest.get("pii_found"), "pii_redacted": manifest["counts"].get("pii_redacted", 0)}

    intents = intent_tasks()
    project = sdk.projects.create(title="export: intents", label_config=(TEMPLATES / "search_intent.xml").read_text())
    sdk.projects.import_tasks(id=project.id, request=intents)
    manifest, rows = export(project.id, url, token, workdir / "intents", "search_intent")
    copies = Counter(r["data"]["text"] for rs in rows.values() for r in rs)
    splits_of: dict[str, set[str]] = {}
    for split, rs in rows.items():
        for r in rs:
            splits_of.setdefault(r["data"]["text"], set()).add(split)
    counts = manifest["counts"]
    intent = {"tasks": len(intents), "distinct_texts": len({t["data"]["text"] for t in intents}),
              "records": sum(copies.values()), "texts_written_more_than_once": sum(1 for n in copies.values() if n > 1),
              "texts_in_more_than_one_split": sum(1 for s in splits_of.values() if len(s) > 1),
              "reference_texts_exported": sum(1 for t in copies if t.startswith("reference query")),
              "counts": {k: counts[k] for k in sorted(counts) if "conflict" in k or "duplicate" in k
                         or k in ("reference_task", "written_rows")}}
    return {"flight_slots": flight, "search_intent": intent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url")
    parser.add_argument("--token")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    from label_studio_sdk.client import LabelStudio

    with tempfile.TemporaryDirectory(prefix="prelabel-export-") as tmp:
        server = None
        if args.url:
            url, token = args.url, args.token
        else:
            from prelabel.stack.label_studio import start_label_studio

            server = start_label_studio(Path(tmp) / "label-studio")
            url, token = server.url, server.api_key
        try:
            result = run(url, token, LabelStudio(base_url=url, api_key=token), Path(tmp))
        finally:
            if server is not None:
                server.process.stop()
    print(json.dumps(result, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
