"""Prometheus metrics on ``[metrics] listen`` (the counting needs the ``metrics`` extra).

The same listener serves the status page at ``/`` and the status object at ``/status.json``
when the daemon gives it a status source (see :mod:`.listener`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import structlog

from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.operations.listener import Listener, StatusSource
from ymir_dropbox.operations.verdicts import PackageSource

log = structlog.get_logger(__name__)

DiskSource = Callable[[], Mapping[str, int]]


class Metrics:
    """Counters the daemon updates; a no-op when metrics are off.

    ``status_source`` feeds ``/`` and ``/status.json``, ``package_source``
    ``/packages/<sha256>``; ``disk_source`` (bytes per folder,
    ``retention.folder_usage``) is read at each scrape for ``ymir_dropbox_folder_bytes``;
    ``last_success`` is the Unix time of the ledger's last import when the daemon starts.
    """

    def __init__(
        self,
        listen: str,
        *,
        status_source: StatusSource | None = None,
        package_source: PackageSource | None = None,
        disk_source: DiskSource | None = None,
        last_success: float | None = None,
        hosts: tuple[str, ...] = (),
    ) -> None:
        self.enabled = False  # counting: only with prometheus-client
        self.listener: Listener | None = None
        if not listen:
            return
        try:
            import prometheus_client as prometheus
        except ImportError:
            # The listener still serves the status and the verdicts push asks for.
            log.warning(
                "metrics_unavailable",
                reason="prometheus-client is not installed: pip install 'ymir-dropbox[metrics]'",
            )
        else:
            self._count_with(prometheus, disk_source, last_success)
        host, _, port = listen.rpartition(":")
        try:
            self.listener = Listener(
                host or "127.0.0.1",
                int(port),
                metrics_text=self.exposition,
                status_source=status_source,
                package_source=package_source,
                hosts=hosts,
            )
        except OSError as error:
            raise DropboxError(
                f"metrics.listen: cannot listen on {listen}: {error.strerror}"
            ) from None
        self.listener.start()

    def _count_with(
        self, prometheus: Any, disk_source: DiskSource | None, last_success: float | None
    ) -> None:
        self.enabled = True
        self._prometheus: Any = prometheus
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
        if last_success is not None:  # the ledger's, so a restart is no "no success since"
            self.last_success.set(last_success)
        if disk_source is not None:
            self.registry.register(FolderBytes(disk_source))

    @property
    def address(self) -> tuple[str, int] | None:
        """Where the listener is (the real port when ``listen`` asked for port 0)."""
        return self.listener.address if self.listener else None

    def exposition(self, accept: str) -> tuple[bytes, str] | None:
        """The registry in the format the scraper accepts (Prometheus text or OpenMetrics);
        None without prometheus-client."""
        if not self.enabled:
            return None
        encoder, content_type = self._prometheus.exposition.choose_encoder(accept)
        body: bytes = encoder(self.registry)
        return body, str(content_type)

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

    def close(self) -> None:
        """Stop listening (the daemon's exit does this too)."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None


class FolderBytes:
    """``ymir_dropbox_folder_bytes{folder=...}``, read from the folders at each scrape."""

    name = "ymir_dropbox_folder_bytes"
    documentation = "Bytes of regular files under each folder (symlinks not followed)"

    def __init__(self, source: DiskSource) -> None:
        self.source = source

    def _family(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        return GaugeMetricFamily(self.name, self.documentation, labels=["folder"])

    def describe(self) -> list[Any]:
        return [self._family()]

    def collect(self) -> Iterator[Any]:
        family = self._family()
        for folder, size in sorted(self.source().items()):
            family.add_metric([folder], float(size))
        yield family
