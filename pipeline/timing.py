"""Where the time goes: seconds and counts per stage of the pipeline, for the metrics and the benchmarks.

A stage is timed with `with stage("parse"):`; the totals are process-wide and only ever grow (like Prometheus
counters). Timing costs two perf_counter calls per stage entered, nothing else.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

# in the order the data flows
STAGES = ("fetch", "store", "parse", "understand", "trust", "link", "replay", "drafts")

_lock = threading.Lock()
_seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
_counts: dict[str, int] = dict.fromkeys(STAGES, 0)


@contextmanager
def stage(name: str, count: int = 1) -> Iterator[None]:
    """Add the time spent in the block to stage `name` (and `count` items to its count)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        spent = time.perf_counter() - started
        with _lock:
            _seconds[name] = _seconds.get(name, 0.0) + spent
            _counts[name] = _counts.get(name, 0) + count


def totals() -> dict[str, tuple[float, int]]:
    """(seconds, count) of every stage so far, in data-flow order."""
    with _lock:
        return {
            name: (_seconds.get(name, 0.0), _counts.get(name, 0))
            for name in (*STAGES, *(n for n in _seconds if n not in STAGES))
        }
