"""Where a job's actors run: the Ray options of its workers and of its learner.

:func:`plan` reads the cluster's resources once, when a learner is about to start (a blocking
Ray call: run it off the event loop), and decides:

- **Workers**: GPU workers when the cluster has GPUs (``DistributedConfig.resolve_gpus``), with
  ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` so workers sharing a card do not each grab it whole;
  else CPU workers with ``JAX_PLATFORMS=cpu`` (a job that asked for GPUs on a CPU-only cluster
  falls back, with a warning: Ray itself would wait forever for a GPU that does not exist).
  A worker asks Ray for ``cpus_per_worker`` CPUs and the job's custom ``worker_resources``.
- **The learner** lives where the cluster says learners live: when a node offers the custom
  resource :data:`LEARNER_RESOURCE` (``star_learner``), the learner asks for one unit of it and
  no CPU. Such a node (deploy/: a small CPU node, never a GPU node, never the head beside the
  GCS) advertises ``num-cpus: 0`` so that workers never land on it, and ``star_learner: N`` for
  the N learners its CPUs and memory carry. The embedded default's local Ray offers it on its
  one node. On a cluster without it the learner asks for no CPU, Ray places it anywhere, and the
  job's log says so and where it went (:func:`describe`).

:func:`describe` turns the workers' placement report into the job's log lines.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from services.cluster import cores, events, runtime
from services.domain.spec import DistributedConfig

logger = logging.getLogger(__name__)

LEARNER_RESOURCE = runtime.LEARNER_RESOURCE
# XLA flags of a CPU worker: no multi-threaded Eigen kernels inside one XLA op. What bounds a
# worker to its cores is its CPU affinity (services.cluster.cores: XLA's pool gets one thread per
# claimed core); pinned to one core the flag changes nothing measurable, and it helps a worker
# that runs unpinned (benchmarks/README.md, "Service scaling").
CPU_WORKER_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false"


@dataclasses.dataclass(frozen=True)
class Plan:
    """Ray actor options of the job's workers and learner, and what the job's log should say."""

    worker_options: dict[str, Any]
    device: str  # "cpu" or "gpu": what the workers run on
    learner_options: dict[str, Any]
    learner_home: bool  # the learner asks for LEARNER_RESOURCE
    warnings: tuple[str, ...] = ()


def worker_options(distributed: DistributedConfig, gpus: float) -> tuple[dict[str, Any], str]:
    """Ray actor options of a worker and the device ("cpu" or "gpu") for ``gpus`` per worker."""
    options: dict[str, Any] = {"num_cpus": distributed.cpus_per_worker}
    if distributed.worker_resources:
        options["resources"] = dict(distributed.worker_resources)
    if gpus > 0:
        options["num_gpus"] = gpus
        # JAX_PLATFORMS "": JAX's own choice (the GPU), whatever the service's environment says
        # (a service started with JAX_PLATFORMS=cpu would otherwise pass it on to GPU workers).
        env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "JAX_PLATFORMS": ""}
        device = "gpu"
    else:
        env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": CPU_WORKER_XLA_FLAGS}
        if os.environ.get(cores.CLAIM_DIR_ENV):  # the service's own core-claim directory
            env[cores.CLAIM_DIR_ENV] = os.environ[cores.CLAIM_DIR_ENV]
        device = "cpu"
    options["runtime_env"] = {"env_vars": env}
    return options, device


def learner_options(cluster: dict[str, float]) -> tuple[dict[str, Any], bool]:
    """The learner's Ray options on a cluster with ``cluster`` resources, and whether it has a
    home (a node offering LEARNER_RESOURCE)."""
    options: dict[str, Any] = {"num_cpus": 0, "runtime_env": {"env_vars": {"JAX_PLATFORMS": "cpu"}}}
    if cluster.get(LEARNER_RESOURCE, 0.0) >= 1:
        return {**options, "resources": {LEARNER_RESOURCE: 1}}, True
    return options, False


def plan(distributed: DistributedConfig) -> Plan:
    """The placement of a job's actors on the cluster as it is now (blocking Ray calls)."""
    cluster = runtime.cluster_resources()
    gpus = distributed.resolve_gpus(cluster.get("GPU", 0.0))
    workers, device = worker_options(distributed, gpus)
    learner, home = learner_options(cluster)
    warnings = []
    if device == "cpu" and distributed.gpus_per_worker:
        warnings.append("the cluster has no GPU: falling back to CPU workers")
    missing = sorted(
        name
        for name, amount in workers.get("resources", {}).items()
        if cluster.get(name, 0.0) < amount
    )
    if missing:
        warnings.append(
            f"no node of the cluster has {', '.join(missing)}: the workers wait until one joins"
        )
    return Plan(workers, device, learner, home, tuple(warnings))


def describe(event: events.Placement, plan: Plan) -> list[tuple[str, str]]:
    """(level, message) lines of the job's log for where its actors run."""
    lines = []
    hosts = ", ".join(
        f"{w.worker}@{w.host}({w.device}{_cores(w)})" for w in sorted(event.workers, key=_index)
    )
    lines.append(("INFO", f"workers: {hosts}"))
    for worker in event.workers:
        if worker.device != plan.device:
            lines.append(
                (
                    "WARNING",
                    f"worker {worker.worker} computes on {worker.device}, not {plan.device}"
                    " (its node has no usable GPU for JAX)",
                )
            )
        if worker.device == "cpu" and not worker.cores:
            note = f": {worker.pin_note}" if worker.pin_note else ""
            lines.append(("WARNING", f"worker {worker.worker} runs unpinned{note}"))
    where = f"{event.learner_host} (node {event.learner_node}, pid {event.learner_pid})"
    if plan.learner_home:
        lines.append(("INFO", f"learner: {where}"))
    else:
        lines.append(
            (
                "WARNING",
                f"no node offers the {LEARNER_RESOURCE} resource: the learner runs where Ray"
                f" placed it, {where}",
            )
        )
    return lines


def _index(worker: events.WorkerPlacement) -> int:
    return worker.worker


def _cores(worker: events.WorkerPlacement) -> str:
    return f", cores {','.join(map(str, worker.cores))}" if worker.cores else ""
