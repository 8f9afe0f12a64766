"""The suite's durations from its JUnit report: per-group totals and the slowest tests.

    bash scripts/test.sh                                    # writes artifacts/test-report.xml
    python benchmarks/suite_durations.py artifacts/test-report.xml [--top 40]

Groups are the folders under tests/ (unit, integration, e2e; files directly in tests/ are "top").
With pytest-xdist the per-group sums add up the workers' time, so they exceed the wall clock,
which is the report's own ``time`` (the whole session, collection and session fixtures included).
Output: benchmarks/results/suite_durations.txt.
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path


def group_of(classname: str) -> str:
    """``tests.e2e.test_x`` -> ``e2e``; ``tests.test_x`` -> ``top``."""
    parts = classname.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "tests" and not parts[1].startswith("test_") else "top"


def file_of(classname: str) -> str:
    """``tests.e2e.test_x.TestCase`` -> ``tests/e2e/test_x.py``."""
    parts = classname.split(".")
    cut = next((i for i, part in enumerate(parts) if part.startswith("test_")), len(parts) - 1)
    return "/".join(parts[:cut + 1]) + ".py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    suite = ET.parse(args.report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert suite is not None, "no <testsuite> in the report"
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    files: dict[str, float] = defaultdict(float)
    tests = []
    for case in suite.iter("testcase"):
        seconds = float(case.get("time", 0))
        classname = case.get("classname", "")
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        totals[group_of(classname)][0] += 1
        totals[group_of(classname)][1] += seconds
        files[file_of(classname)] += seconds
        tests.append((seconds, f"{file_of(classname)}::{case.get('name')}", outcome))
    print(f"session wall clock: {float(suite.get('time', 0)):.0f} s ({suite.get('tests')} tests, "
          f"{suite.get('failures')} failed, {suite.get('errors')} errors, {suite.get('skipped')} skipped; "
          f"started {suite.get('timestamp')}, host {suite.get('hostname')})")
    print("\nper group (sum of test durations: setup + call + teardown)")
    for group, (count, seconds) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
        print(f"  {group:<12} {int(count):>5} tests {seconds:>8.0f} s")
    print(f"  {'all':<12} {sum(int(c) for c, _ in totals.values()):>5} tests "
          f"{sum(s for _, s in totals.values()):>8.0f} s")
    print("\nslowest files")
    for name, seconds in sorted(files.items(), key=lambda kv: -kv[1])[:20]:
        print(f"  {seconds:>8.1f} s  {name}")
    print(f"\nslowest {args.top} tests")
    for seconds, name, outcome in sorted(tests, reverse=True)[:args.top]:
        print(f"  {seconds:>8.1f} s  {name}" + ("" if outcome == "passed" else f"  [{outcome}]"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
