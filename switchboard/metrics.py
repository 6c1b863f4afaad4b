"""Prometheus metrics at ``/metrics`` (DESIGN §8), on a registry of our own (not the global one)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from dispatch.queue import RunQueue


class PrometheusMetrics:
    """Implements ``core.ports.Metrics``; the queue depth is read from the database per scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._accepted = Counter(
            "switchboard_runs_accepted",
            "Run requests committed, by source channel",
            ["source"],
            registry=self.registry,
        )
        self._rejected = Counter(
            "switchboard_requests_rejected",
            "Requests answered with an error, by HTTP status",
            ["status"],
            registry=self.registry,
        )
        self._finished = Histogram(
            "switchboard_run_duration_seconds",
            "Execution time of finished runs, by final status",
            ["status"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
            registry=self.registry,
        )
        self._deliveries = Counter(
            "switchboard_delivery_attempts",
            "Reply delivery attempts, by channel and outcome (sent, retry, failed)",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self._depth = Gauge(
            "switchboard_queue_depth",
            "Runs waiting or running, by status (read at scrape time)",
            ["status"],
            registry=self.registry,
        )

    def run_accepted(self, source: str) -> None:
        self._accepted.labels(source).inc()

    def request_rejected(self, status: int) -> None:
        self._rejected.labels(str(status)).inc()

    def run_finished(self, status: str, seconds: float) -> None:
        self._finished.labels(status).observe(seconds)

    def delivery_finished(self, channel: str, outcome: str) -> None:
        self._deliveries.labels(channel, outcome).inc()

    async def render(self, queue: RunQueue) -> web.Response:
        counts = await queue.counts()
        for status in ("queued", "running"):
            self._depth.labels(status).set(counts.get(status, 0))
        response = web.Response(body=generate_latest(self.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response
