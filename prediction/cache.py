"""Content-addressed prediction cache in Redis: the same task is never paid for twice.

The key hashes everything that can change the answer: model, prompt version (guideline +
templates + answer schema), labeling config, the task's input texts, the few-shot examples
chosen for it and the decoding settings. Only fully valid predictions are stored; failures are
retried next time.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson
import redis.asyncio as aioredis

from prelabel.contract import Prediction, prediction_cache_key
from prelabel.prediction import metrics

CACHE_FORMAT = "v1"


def cache_key(**parts: Any) -> str:
    canonical = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return prediction_cache_key(CACHE_FORMAT, hashlib.sha256(canonical.encode()).hexdigest())


class PredictionCache:
    def __init__(self, client: aioredis.Redis, ttl: int) -> None:
        self.client = client
        self.ttl = ttl

    async def get(self, key: str) -> Prediction | None:
        raw = await self.client.get(key)
        metrics.CACHE.labels("hit" if raw is not None else "miss").inc()
        return orjson.loads(raw) if raw is not None else None

    async def set(self, key: str, prediction: Prediction) -> None:
        await self.client.set(key, orjson.dumps(prediction), ex=self.ttl or None)
