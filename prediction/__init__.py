"""The prediction core: Label Studio tasks in, validated predictions with provenance out.

The predictor and its context builder, prompt, LLM client and load control, confidence and label
distributions, few-shot examples, the prediction cache, the model router and cascade, and the
Prometheus counters they keep. The HTTP server (`prelabel.ml_backend`), the worker's jobs
(`prelabel.jobs`), export, quality and the CLI all use it; it imports none of them.
"""
