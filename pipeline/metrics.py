"""Prometheus metrics of the daemon: messages, claims by state, poll freshness, reconnects, time per stage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from pipeline.errors import PipelineError
from pipeline.schema import Claim, StoredMessage
from pipeline.store import Store
from pipeline.timing import totals
from pipeline.vocabulary import STATES

MESSAGE_STATUSES = ("pending", "done", "failed")


class Metrics:
    """Counters the poller bumps, and gauges read from the database when scraped."""

    def __init__(self, store: Store, port: int, *, address: str = "127.0.0.1") -> None:
        self.store = store
        self.registry = CollectorRegistry()
        self.counters = {
            name: Counter(f"pipeline_{name}", help_text, registry=self.registry)
            for name, help_text in (
                ("messages_stored", "Amazon messages stored"),
                ("reconnects", "IMAP reconnects after an error"),
                ("login_failures", "IMAP logins refused"),
                ("cycles", "completed poll cycles"),
                ("uidvalidity_changes", "folders re-scanned after a UIDVALIDITY change"),
            )
        }
        self.claims = Gauge("pipeline_claims", "claims by state", ["state"], registry=self.registry)
        self.messages = Gauge(
            "pipeline_messages", "stored messages by processing status", ["status"], registry=self.registry
        )
        self.since_poll = Gauge(
            "pipeline_seconds_since_last_poll", "seconds since the last successful poll", registry=self.registry
        )
        self._poller: Any = None
        self.since_poll.set_function(self._seconds_since_poll)
        self.registry.register(_StageCollector())
        self.refresh()
        try:
            self.server, self.thread = start_http_server(port, addr=address, registry=self.registry)
        except OSError as exc:
            raise PipelineError(f"cannot serve metrics on {address}:{port}: {exc.strerror or exc}") from None
        self.port = self.server.server_port

    def close(self) -> None:
        """Stop serving /metrics and free the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def attach(self, poller: Any) -> None:
        """Read the last successful poll time from this poller."""
        self._poller = poller

    def inc(self, name: str) -> None:
        """Bump a counter (unknown names are ignored)."""
        counter = self.counters.get(name)
        if counter is not None:
            counter.inc()
        if name == "cycles":
            self.refresh()

    def refresh(self) -> None:
        """Re-read claims by state and messages by status from the database."""
        with self.store.session() as session:
            claims = dict.fromkeys(STATES, 0)
            claims.update(
                (state, count)
                for state, count in session.execute(select(Claim.state, func.count()).group_by(Claim.state))
            )
            messages = dict.fromkeys(MESSAGE_STATUSES, 0)
            messages.update(
                (status, count)
                for status, count in session.execute(
                    select(StoredMessage.status, func.count()).group_by(StoredMessage.status)
                )
            )
        # every known label is set, to 0 when none: a state that empties must not keep its old count
        for state, count in claims.items():
            self.claims.labels(state=state).set(count)
        for status, count in messages.items():
            self.messages.labels(status=status).set(count)

    def _seconds_since_poll(self) -> float:
        last = getattr(self._poller, "last_success", None)
        return float("nan") if last is None else time.time() - last


class _StageCollector(Collector):
    """pipeline_stage_seconds_total and pipeline_stage_items_total, by stage (pipeline.timing), read when scraped."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        seconds = CounterMetricFamily("pipeline_stage_seconds", "time spent in each stage", labels=["stage"])
        items = CounterMetricFamily("pipeline_stage_items", "items each stage handled", labels=["stage"])
        for name, (spent, count) in totals().items():
            seconds.add_metric([name], spent)
            items.add_metric([name], count)
        yield seconds
        yield items
