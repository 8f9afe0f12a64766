"""The local stack: Label Studio, a local LLM server, Redis, the backend and the worker as
managed processes (``prelabel up`` / ``down`` / ``status``); the test harness starts its servers
with the same code."""
