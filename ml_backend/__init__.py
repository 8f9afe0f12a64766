"""Label Studio ML backend: protocol server, prediction pipeline, LLM client, cache, metrics."""
