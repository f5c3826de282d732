"""Which inference work yields to the rest: what the server runs in the background (the lines
of a batch job) queues behind online requests.

The batch runner sends each line through the same routes as an online request (the API
layer's in-process dispatch), so the route that reaches the engine does not know it serves a
batch; the dispatch sets `background_work` for the task that runs the line, and the engine
reads it where it queues work: batch items go to the batcher's background lane, and a
background generation takes at most half of a model's generation slots. It decides
priority only, never access: who may do what is the explicit caller's business.

Example::

    token = background_work.set(True)
    try:
        await app(scope, receive, send)  # the engine queues this request's items behind others
    finally:
        background_work.reset(token)
"""

from __future__ import annotations

from contextvars import ContextVar

background_work: ContextVar[bool] = ContextVar("openmaas_background_work", default=False)


def background_generation_slots(max_concurrent_generations: int) -> int:
    """How many of a model's generation slots background work may hold: half, at least one,
    so online requests always find the rest free."""
    return max(1, max_concurrent_generations // 2)
