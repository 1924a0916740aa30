"""Prometheus metrics on ``[metrics] listen`` (optional; needs the ``metrics`` extra)."""

from __future__ import annotations

from typing import Any

from ymir_dropbox.reading.problems import ConfigError


class Metrics:
    """Counters the daemon updates; a no-op when metrics are off."""

    def __init__(self, listen: str) -> None:
        self.enabled = bool(listen)
        if not self.enabled:
            return
        try:
            import prometheus_client as prometheus
        except ImportError:
            raise ConfigError(
                "metrics.listen is set but prometheus-client is not installed "
                "(pip install 'ymir-dropbox[metrics]')"
            ) from None
        self.registry: Any = prometheus.CollectorRegistry()
        self.packages = prometheus.Counter(
            "ymir_dropbox_packages", "Packages handled, by final status", ["status"],
            registry=self.registry,
        )  # fmt: skip
        self.duration = prometheus.Histogram(
            "ymir_dropbox_import_duration_seconds", "Time to import one package",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=self.registry,
        )  # fmt: skip
        self.bytes = prometheus.Counter(
            "ymir_dropbox_package_bytes", "Bytes of packages handled", registry=self.registry
        )
        self.queue_depth = prometheus.Gauge(
            "ymir_dropbox_queue_depth", "Packages waiting or being imported", registry=self.registry
        )
        self.last_success = prometheus.Gauge(
            "ymir_dropbox_last_success_timestamp_seconds",
            "Unix time of the last successful import",
            registry=self.registry,
        )
        host, _, port = listen.rpartition(":")
        prometheus.start_http_server(int(port), addr=host or "127.0.0.1", registry=self.registry)

    def record(self, status: str, duration: float, size: int, finished: float) -> None:
        if not self.enabled:
            return
        self.packages.labels(status=status).inc()
        self.duration.observe(duration)
        self.bytes.inc(size)
        if status == "imported":
            self.last_success.set(finished)

    def set_queue_depth(self, depth: int) -> None:
        if self.enabled:
            self.queue_depth.set(depth)
