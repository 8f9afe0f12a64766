#!/usr/bin/env python
"""Shared-prefix share of prompt tokens for each shipped template (prefix caching).

vLLM's automatic prefix caching and hosted APIs' cached-input pricing pay off for the part of a
prompt that is identical, token for token, from the start across requests. The backend puts
everything a project's tasks share first (system message, then the few-shot turns in the pool's
fixed order) and each task's own input last. For every shipped template this script renders the
real prompts of the template's sample tasks, applies SmolLM2's chat template with its tokenizer
(read from the GGUF that the local stack serves, no download) and reports, per template:

* the prompt tokens of a task (mean), and the tokens all of them share from the start;
* the share = shared / mean prompt tokens: the part of every call after the first that a prefix
  cache serves;
* the same with the few-shot turns ordered by similarity to the task (the layout before this
  change), for comparison.

    ~/.cache/prelabel/venv-dev/bin/python benchmarks/prefix_share.py [--json-out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prelabel.label_config.guideline import shipped_templates, template_path
from prelabel.prediction.predictor import ContextBuilder
from prelabel.settings import Settings
from prelabel.stack.llm_server import find_gguf


def tokenizer():
    from transformers import AutoTokenizer

    gguf = find_gguf()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def shared_prefix(sequences: list[list[int]]) -> int:
    first = sequences[0]
    n = len(first)
    for other in sequences[1:]:
        n = min(n, len(other))
        n = next((i for i in range(n) if first[i] != other[i]), n)
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    tok = tokenizer()
    settings = Settings(_env_file=None)
    contexts = ContextBuilder(settings)
    rows = []
    for name in shipped_templates():
        ctx = contexts.context(template_path(name, ".xml").read_text(), name)
        samples = [json.loads(line) for line in template_path(name, ".sample.jsonl").read_text().splitlines()
                   if line.strip()]
        order = ctx.pool_order(ctx.pool)
        layouts: dict[str, list[list[int]]] = {"stable": [], "by_similarity": []}
        for data in samples:
            texts = ctx.schema.object_texts(data)
            ranked = ctx.pool.select(texts, settings.fewshot_k)
            candidates = ctx.candidates(texts, ctx.pool)
            for layout, examples in (("stable", sorted(ranked, key=lambda e: order[id(e)])),
                                     ("by_similarity", ranked)):
                messages = ctx.prompt.messages(texts, examples, candidates=candidates)
                text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                layouts[layout].append(tok(text, add_special_tokens=False)["input_ids"])
        row = {"template": name, "tasks": len(samples), "fewshot_pool": len(ctx.pool)}
        for layout, sequences in layouts.items():
            mean = sum(map(len, sequences)) / len(sequences)
            shared = shared_prefix(sequences)
            row[layout] = {"mean_prompt_tokens": round(mean, 1), "shared_prefix_tokens": shared,
                           "share": round(shared / mean, 3)}
        rows.append(row)
    print(f"{'template':<20}{'tasks':>6}{'prompt tok':>12}{'shared tok':>12}{'share':>8}{'before':>8}")
    for row in rows:
        stable, before = row["stable"], row["by_similarity"]
        print(f"{row['template']:<20}{row['tasks']:>6}{stable['mean_prompt_tokens']:>12}"
              f"{stable['shared_prefix_tokens']:>12}{stable['share']:>8.1%}{before['share']:>8.1%}")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2) + "\n")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
