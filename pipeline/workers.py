"""Understanding on the other cores: parse, understand and check trust of big batches in worker processes.

The database work (store, link, replay) stays in the main process, one transaction per message; only what is pure
(bytes in, Facts out) moves, so a worker that dies loses nothing: its batch is understood again in the main
process. Used for backfills and big catch-ups; a handful of new messages is understood in place.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from pipeline import trust
from pipeline.errors import PipelineError
from pipeline.message import parse_message
from pipeline.understanding.facts import Facts
from pipeline.understanding.understander import Understander

log = logging.getLogger(__name__)

_worker: tuple[Understander, tuple[str, ...]] | None = None


def _start(models_dir: str | None, response_days: int, authserv_ids: tuple[str, ...]) -> None:
    """A worker's start: its Understander (inherited already built when the process was forked)."""
    global _worker
    _worker = (Understander.shared(models_dir, response_days=response_days), authserv_ids)


def understand_raws(items: list[tuple[int, bytes]]) -> list[tuple[int, Facts | None]]:
    """The facts of each (id, raw bytes), trust checked; None for a message that is no email (the main process
    parses it again and keeps it as failed with its error)."""
    assert _worker is not None, "the worker was not started"
    understander, authserv_ids = _worker
    found: list[tuple[int, Facts | None]] = []
    for message_id, raw in items:
        try:
            message = parse_message(raw)
        except PipelineError:
            found.append((message_id, None))
            continue
        found.append((message_id, trust.apply(understander.understand(message), raw, authserv_ids)))
    return found


def worker_count() -> int:
    """One worker per core (at most 4), none on a single core: the main process spends much of a backfill
    waiting for the database and for the workers, so on two cores two workers beat one (measured: 240 against
    204 messages/s with scripts/bench_backfill.py --all-amazon)."""
    cores = os.cpu_count() or 1
    return 0 if cores < 2 else min(4, cores)


class UnderstandingPool:
    """Worker processes that understand batches of raw messages (see understand_raws)."""

    def __init__(self, models_dir: str | None, response_days: int, authserv_ids: tuple[str, ...], workers: int) -> None:
        # fork (Linux): the workers inherit the loaded rule models and start at once
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        self.workers = workers
        self.broken = False  # a worker died (killed, out of memory): the pool takes no more work
        self.executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context(method),
            initializer=_start,
            initargs=(models_dir, response_days, authserv_ids),
        )

    def submit(self, items: list[tuple[int, bytes]]) -> Future[list[tuple[int, Facts | None]]]:
        """Understand these messages in a worker; a pool that lost a worker answers with that failure."""
        try:
            future = self.executor.submit(understand_raws, items)
        except BrokenProcessPool as exc:
            self.broken = True
            future = Future()
            future.set_exception(exc)
            return future
        future.add_done_callback(self._notice_death)
        return future

    def _notice_death(self, future: Future[list[tuple[int, Facts | None]]]) -> None:
        if not future.cancelled() and isinstance(future.exception(), BrokenProcessPool):
            self.broken = True

    def close(self) -> None:
        """Stop the workers: batches not started are dropped (redone when needed), a batch under way is let
        finish (a fraction of a second), so that no worker outlives the pass."""
        self.executor.shutdown(wait=True, cancel_futures=True)
