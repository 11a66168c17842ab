"""Wires the stages together for the commands: the store, the claim desk, the poller, metrics."""

from __future__ import annotations

from pipeline.config import Settings
from pipeline.poller import Poller, PollStats
from pipeline.store import Store


def open_store(settings: Settings) -> Store:
    """The configured database, migrated."""
    return Store(settings.database.url)


def poll_one_pass(settings: Settings) -> PollStats:
    """`pipeline poll --once`: one pass over the watched folders."""
    store = open_store(settings)
    try:
        return Poller(settings, store, stages=None).poll_once()
    finally:
        store.dispose()


def poll_forever(settings: Settings, *, metrics_port: int | None = None) -> None:
    """`pipeline poll`: the daemon, until SIGTERM/SIGINT."""
    store = open_store(settings)
    try:
        Poller(settings, store, stages=None).run()
    finally:
        store.dispose()
