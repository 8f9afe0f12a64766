"""Quality signals measured with the local model on a labeled set (issue 15's closing figures).

    python benchmarks/quality_signals.py [--data benchmarks/datasets/search_intent_quality.jsonl]
                                         [--reviews 25] [--cascade-tasks 24] [--out artifacts/quality_signals.json]

Starts two llama.cpp servers on the packaged SmolLM2-135M (a second GGUF for the reviewer with
``PRELABEL_REVIEWER_GGUF``), embedded Redis in a temporary folder, and measures in one run:

1. AUROC and ECE of the score for "the pre-annotation is right", before and after calibration
   (Platt and isotonic, out of fold: 5-fold cross-validation, never on the fitted pairs);
2. the share of the ranking's uncertainty that comes from ``label_probs``;
3. the reviewer's agreement with the human labels, and what the independence check says;
4. cascade routing counts (cheap server first, fallback under the calibrated threshold);
5. LLM calls saved by near-duplicate reuse, and the accuracy of reused vs individually
   predicted labels on the same tasks.

The figures are printed and written as JSON; benchmarks/README.md keeps the committed output.
SmolLM2-135M is a wiring model: the accuracy is low, what matters is that each figure is real.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _choice(prediction: dict[str, Any]) -> str | None:
    for region in prediction.get("result") or []:
        if region.get("from_name") == "intent":
            return region["value"]["choices"][0]
    return None


async def measure(rows: list[dict[str, Any]], reviews: int, cascade_tasks: int, workdir: Path) -> dict[str, Any]:
    from prelabel.contract import ReviewStatus
    from prelabel.prediction.cascade import CalibratedCascade
    from prelabel.prediction.llm_client import LLMClient
    from prelabel.prediction.model_identity import compare, identify
    from prelabel.prediction.near_duplicates import predict_with_reuse
    from prelabel.prediction.predictor import Predictor, open_predictor
    from prelabel.prediction.review import proposed_answer, review_one
    from prelabel.quality.calibration_fit import Pairs, calibration_report, fit_map
    from prelabel.ranking.priority import rank
    from prelabel.ranking.signals import TaskSignals
    from prelabel.settings import Settings
    from prelabel.stack.llm_server import find_reviewer_gguf, start_llm_server

    config = (ROOT / "label_config/templates/search_intent.xml").read_text()
    main = start_llm_server(workdir / "llm-a")
    second_gguf = find_reviewer_gguf()
    other = start_llm_server(workdir / "llm-b", gguf=second_gguf, alias="reviewer" if second_gguf else "smollm2")
    report: dict[str, Any] = {"tasks": len(rows), "model": "SmolLM2-135M-Instruct Q4_1 (llama.cpp)"}
    try:
        settings = Settings(llm_base_urls=[main.base_url], llm_model="smollm2", structured_output="json_object",
                            guideline="search_intent", data_dir=workdir / "data", fewshot_k=3,
                            llm_concurrency=2, reviewer_base_urls=[other.base_url],
                            reviewer_model="reviewer" if second_gguf else "smollm2-reviewer")
        async with open_predictor(settings) as predictor:
            await predictor.cache.client.flushdb()
            ctx = predictor.context(config, "search_intent")
            tasks = [{"id": i, "data": {"text": r["text"]}} for i, r in enumerate(rows)]

            # 1. individually, every task
            started = time.perf_counter()
            individual = await predictor.predict(tasks, ctx)
            report["predict_seconds"] = round(time.perf_counter() - started, 1)
            ok = [i for i, p in enumerate(individual) if p["meta"]["status"] == "ok"]
            scores = np.array([individual[i]["score"] for i in ok])
            correct = np.array([_choice(individual[i]) == rows[i]["label"] for i in ok])
            report["valid"] = len(ok)
            report["accuracy"] = float(correct.mean())
            report["score_sources"] = sorted({individual[i]["meta"]["provenance"]["score_source"] for i in ok})
            report["calibration"] = {}
            for method in ("platt", "isotonic"):
                r = calibration_report(Pairs("smollm2", list(scores), list(correct)), method)  # type: ignore[arg-type]
                report["calibration"][method] = {
                    "status": r.status, "ece_before": r.before["ece"], "auroc_before": r.before["auroc"],
                    "ece_after_out_of_fold": (r.after or {}).get("ece"),
                    "auroc_after_out_of_fold": (r.after or {}).get("auroc")}

            # 2. where the ranking's uncertainty comes from
            signals = [TaskSignals(id=i, text=rows[i]["text"], predicted=_choice(p), score=p["score"],
                                   label_probs=(p["result"][0]["prelabel"].get("label_probs") if p["result"] else None),
                                   pre_status="" if p["meta"]["status"] == "ok" else p["meta"]["status"])
                       for i, p in enumerate(individual)]
            ranking = rank(signals, ctx.schema.fields[0].label_values)
            sources = {s: ranking.source.count(s) for s in set(ranking.source)}
            report["uncertainty_sources"] = sources
            report["uncertainty_share_label_probs"] = sources.get("label_probs", 0) / len(signals)

            # 3. the reviewer against the humans
            ours = identify(main.base_url, "x", "smollm2")
            theirs = identify(other.base_url, "x", settings.reviewer_model or "")
            report["reviewer_independence"] = dict(zip(("verdict", "evidence"), compare(ours, theirs)))
            reviewer = LLMClient(settings.model_copy(update={"llm_base_urls": [other.base_url],
                                                             "llm_model": settings.reviewer_model}))
            agree, judged, statuses, confident = 0, 0, {}, []
            for i in ok[:reviews]:
                texts = {"text": rows[i]["text"]}
                review = await review_one(reviewer, ctx, texts, proposed_answer(ctx, individual[i]["result"]))
                statuses[review.status] = statuses.get(review.status, 0) + 1
                if review.status not in ("passed", ReviewStatus.REJECTED):
                    continue
                rejected = review.status == ReviewStatus.REJECTED
                final = review.corrected.answer["intent"] if rejected else _choice(individual[i])
                judged += 1
                agree += final == rows[i]["label"]
                if review.confidence is not None:
                    confident.append(review.confidence)
            await reviewer.aclose()
            report["review"] = {"reviewed": min(reviews, len(ok)), "statuses": statuses, "with_verdict": judged,
                                "agreement_with_humans": agree / judged if judged else None,
                                "confidence_min_mean_max": [min(confident), float(np.mean(confident)), max(confident)]
                                if confident else None}

            # 4. the cascade: cheap = this server under another name, fallback = the second server
            cmap = fit_map(scores, correct, "smollm2-cheap", "platt")
            cheap = Predictor(settings.model_copy(update={"llm_model": "smollm2-cheap"}),
                              LLMClient(settings.model_copy(update={"llm_model": "smollm2-cheap"})), predictor.cache)
            fallback_settings = settings.model_copy(update={"llm_model": "smollm2-fallback",
                                                            "llm_base_urls": [other.base_url]})
            fallback = Predictor(fallback_settings, LLMClient(fallback_settings), predictor.cache)
            threshold = 0.5
            cascade = CalibratedCascade(cheap, project="bench", calibration=cmap, fallback=fallback,
                                       threshold=threshold)
            sample = tasks[:cascade_tasks]
            routed = await cascade.predict(sample, ctx)
            routes = [p["meta"]["provenance"]["cascade"]["route"] for p in routed]
            right = [_choice(p) == rows[i]["label"] for i, p in enumerate(routed)]
            report["cascade"] = {"threshold_calibrated": threshold, "tasks": len(sample),
                                 "cheap": routes.count("cheap"), "fallback": routes.count("fallback"),
                                 "accuracy": sum(right) / len(right),
                                 "redis_counts": {k.decode(): int(v) for k, v in
                                                  (await predictor.cache.client.hgetall("prelabel:stats:cascade"))
                                                  .items()}}
            await cheap.llm.aclose()
            await fallback.llm.aclose()

            # 5. near-duplicate reuse on the whole set. Every task handed to the model is counted
            # (the cache, warm from step 1, only saves this run's time, not a count).
            calls = {"n": 0}

            async def counted(batch, c, pool):
                calls["n"] += len(batch)
                return await predictor.predict(batch, c, pool)

            reused = await predict_with_reuse(counted, tasks, ctx, None, 0.8)
            members = [i for i, p in enumerate(reused) if p["meta"]["provenance"].get("reused_from") is not None]
            report["near_duplicates"] = {
                "threshold": 0.8, "tasks": len(tasks), "llm_task_calls": calls["n"],
                "calls_saved": len(tasks) - calls["n"], "reused": len(members),
                "accuracy_reused": float(np.mean([_choice(reused[i]) == rows[i]["label"] for i in members]))
                if members else None,
                "accuracy_individual_same_tasks": float(np.mean([_choice(individual[i]) == rows[i]["label"]
                                                                 for i in members])) if members else None,
                "same_label_as_individual": float(np.mean([_choice(reused[i]) == _choice(individual[i])
                                                           for i in members])) if members else None,
            }
    finally:
        main.process.stop()
        other.process.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "benchmarks/datasets/search_intent_quality.jsonl")
    parser.add_argument("--reviews", type=int, default=25)
    parser.add_argument("--cascade-tasks", type=int, default=24)
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts/quality_signals.json")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    with tempfile.TemporaryDirectory(prefix="prelabel-quality-") as tmp:
        report = asyncio.run(measure(rows, args.reviews, args.cascade_tasks, Path(tmp)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
