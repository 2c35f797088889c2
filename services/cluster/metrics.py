"""The job metrics the learner exports through ``ray.util.metrics``, tagged by ``job_id``.

Ray's metrics agent prefixes every name with ``ray_`` and suffixes counters with ``_total``, so
Prometheus sees ``ray_star_meta_loss`` and ``ray_star_staleness_drops_total``
(:func:`prometheus_name`). :data:`METRICS` is the one list of what is exported: the Ray dashboard,
deploy/README.md and the Grafana dashboard are checked against it (tests/deploy).
"""

from __future__ import annotations

import dataclasses
from typing import Any

# The tag every metric carries.
METRIC_TAGS = ("job_id",)


@dataclasses.dataclass(frozen=True)
class Metric:
    """One exported metric: its Ray name, kind, description and the learner record field it
    reports (``"step"``: the outer step itself)."""

    name: str
    kind: str  # "gauge" (the latest value) or "counter" (increments)
    description: str
    field: str


METRICS: tuple[Metric, ...] = (
    Metric("star_meta_loss", "gauge", "mean meta-loss of the last outer step", "meta_loss"),
    Metric("star_outer_step", "gauge", "outer steps done", "step"),
    Metric(
        "star_inner_steps_per_second",
        "gauge",
        "inner steps per second over all workers",
        "inner_steps_per_second",
    ),
    Metric("star_grad_norm", "gauge", "norm of the averaged meta-gradient", "grad_norm"),
    Metric("star_staleness_drops", "counter", "estimates dropped as stale", "stale_now"),
    Metric("star_worker_restarts", "counter", "worker actor failures", "restarts_now"),
    Metric("star_dropped_estimates", "counter", "non-finite estimates dropped", "dropped_now"),
)


def prometheus_name(metric: Metric) -> str:
    """The name Prometheus scrapes: ``ray_`` + name (+ ``_total`` for a counter)."""
    return f"ray_{metric.name}" + ("_total" if metric.kind == "counter" else "")


class JobMetrics:
    """The :data:`METRICS` of one job (created in the learner actor, where Ray exports them)."""

    def __init__(self, job_id: str):
        from ray.util import metrics

        self.tags = {"job_id": job_id}
        self.gauges = [
            (metric, metrics.Gauge(metric.name, metric.description, METRIC_TAGS))
            for metric in METRICS
            if metric.kind == "gauge"
        ]
        self.counters = [
            (metric, metrics.Counter(metric.name, metric.description, METRIC_TAGS))
            for metric in METRICS
            if metric.kind == "counter"
        ]

    def record(self, step: int, record: Any) -> None:
        """Export one outer step's ``StepRecord`` (``services.cluster.events``): gauges set
        (NaN skipped), counters incremented."""
        for metric, gauge in self.gauges:
            value = step if metric.field == "step" else getattr(record, metric.field)
            if value == value:  # NaN is not exported
                gauge.set(value, tags=self.tags)
        for metric, counter in self.counters:
            value = getattr(record, metric.field)
            if value:
                counter.inc(value, tags=self.tags)
