"""Metrics for the demo's processes: the OpenTelemetry SDK with a Prometheus endpoint.

The im-infra libraries emit metrics through the OpenTelemetry API only (a no-op until an SDK is
installed); an application — this demo — installs the SDK and decides where metrics go.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

#: Metric families the report shows (Prometheus names of the im-infra instruments).
REPORT_PREFIXES = ("messaging_", "db_client_", "im_infra_")


def serve_metrics(port: int = 0, host: str = "127.0.0.1") -> int:
    """Install the SDK with a Prometheus reader and serve ``/metrics``; returns the port."""
    metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)


@dataclass(frozen=True)
class Figure:
    name: str
    text: str


def scrape(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> list[Figure]:
    """A short summary of the im-infra families on a ``/metrics`` endpoint: counter totals,
    and count / mean for histograms."""
    url = f"http://{host}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode()
    figures = []
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith(REPORT_PREFIXES):
            continue
        if fam.type == "histogram":
            count = sum(s.value for s in fam.samples if s.name.endswith("_count"))
            total = sum(s.value for s in fam.samples if s.name.endswith("_sum"))
            timed = fam.name.endswith("_seconds")
            mean = f", mean {total / count * 1000:.2f} ms" if count and timed else ""
            figures.append(Figure(fam.name, f"{int(count)} recorded{mean}"))
        elif fam.type in ("counter", "gauge"):
            value = sum(s.value for s in fam.samples if not s.name.endswith("_created"))
            figures.append(Figure(fam.name, f"{value:g}"))
    return figures
