"""The Ray resources a deployment in deploy/ offers, and whether a job's actors fit in them.

A node group (a KubeRay group, a `ray up` node type) is read the way Ray will see it when the
cluster starts: KubeRay's `ray start` flags (num-cpus, else the CPU limit, else the CPU request,
rounded up; num-gpus, else the nvidia.com/gpu limit; custom resources from `resources`) times
`replicas`, and `ray up`'s declared `resources` times `min_workers`. A job is what the service
asks Ray for: one learner (LEARNER_DEMAND, read from the service's placement code) and
`num_workers` workers of `cpus_per_worker` CPUs, the GPUs `DistributedConfig.resolve_gpus`
gives them on this cluster, and `worker_resources`. Placement is first fit, learner first: the
workers are identical, so first fit places as many of them as any placement could once the
learner has its node.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

from services.cluster import placement
from services.domain.spec import DistributedConfig
from tests.deploy.manifests import ray_container, ray_start_argv

LEARNER_RESOURCE = placement.LEARNER_RESOURCE


def learner_demand() -> dict[str, float]:
    """What the service's learner actor asks Ray for on a cluster that offers star_learner
    (from the service's own code: ``services.cluster.placement.learner_options``)."""
    options, home = placement.learner_options({LEARNER_RESOURCE: 1.0})
    assert home
    return {"CPU": float(options["num_cpus"]), **options["resources"]}


LEARNER_DEMAND = learner_demand()
# Slack for sums of fractional resources (Ray itself counts in units of 1/10000).
EPSILON = 1e-9


@dataclasses.dataclass(frozen=True)
class NodeGroup:
    """``count`` identical Ray nodes offering ``resources`` each."""

    name: str
    count: int
    resources: Mapping[str, float]
    head: bool = False

    @property
    def gpu(self) -> bool:
        return self.resources.get("GPU", 0) > 0


def kuberay_quantity(text: str) -> float:
    """A Kubernetes CPU or GPU quantity ("4", "500m") as a number."""
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def kuberay_resources(group: dict[str, Any]) -> dict[str, float]:
    """The Ray resources of one pod of a KubeRay group (head or worker), as KubeRay starts it."""
    params = group.get("rayStartParams", {})
    limits = ray_container(group["template"]).get("resources", {}).get("limits", {})
    requests = ray_container(group["template"]).get("resources", {}).get("requests", {})
    resources: dict[str, float] = {}
    if "num-cpus" in params:
        resources["CPU"] = float(params["num-cpus"])
    elif "cpu" in limits or "cpu" in requests:  # KubeRay >= 1.3: the request when no limit
        resources["CPU"] = math.ceil(kuberay_quantity(limits.get("cpu", requests.get("cpu"))))
    if "num-gpus" in params:
        resources["GPU"] = float(params["num-gpus"])
    elif "nvidia.com/gpu" in limits:
        resources["GPU"] = kuberay_quantity(limits["nvidia.com/gpu"])
    for flag in ray_start_argv(params):
        if flag.startswith("--resources="):
            resources.update(json.loads(flag.removeprefix("--resources=")))
    return resources


def kuberay_groups(cluster: dict[str, Any]) -> list[NodeGroup]:
    spec = cluster["spec"]
    groups = [NodeGroup("head", 1, kuberay_resources(spec["headGroupSpec"]), head=True)]
    for group in spec["workerGroupSpecs"]:
        groups.append(NodeGroup(group["groupName"], group["replicas"], kuberay_resources(group)))
    return groups


def ray_up_groups(config: dict[str, Any]) -> list[NodeGroup]:
    groups = []
    for name, node_type in config["available_node_types"].items():
        head = name == config["head_node_type"]
        count = 1 if head else node_type.get("min_workers", 0)
        groups.append(NodeGroup(name, count, dict(node_type["resources"]), head=head))
    return groups


def total(groups: list[NodeGroup], resource: str) -> float:
    return sum(g.count * g.resources.get(resource, 0) for g in groups)


def worker_demand(distributed: DistributedConfig, groups: list[NodeGroup]) -> dict[str, float]:
    """What one worker of a job asks Ray for on a cluster of ``groups``."""
    demand = {"CPU": float(distributed.cpus_per_worker), **distributed.worker_resources}
    gpus = distributed.resolve_gpus(total(groups, "GPU"))
    if gpus > 0:
        demand["GPU"] = gpus
    return demand


def _take(free: dict[str, float], demand: Mapping[str, float]) -> bool:
    if any(free.get(name, 0) + EPSILON < amount for name, amount in demand.items()):
        return False
    for name, amount in demand.items():
        free[name] -= amount
    return True


def place(distributed: DistributedConfig, groups: list[NodeGroup]) -> dict[str, list[str]]:
    """Node group of the learner and of each worker (first fit, learner first); AssertionError
    naming what does not fit. CPU-only workers are kept off GPU nodes, as Ray keeps them when it
    can."""
    nodes = [(g, dict(g.resources)) for g in groups for _ in range(g.count)]
    learner = next((g.name for g, free in nodes if _take(free, LEARNER_DEMAND)), None)
    assert learner is not None, f"no node has room for the learner ({LEARNER_DEMAND})"
    demand = worker_demand(distributed, groups)
    workers = []
    for index in range(distributed.num_workers):
        fits = (
            g.name for g, free in nodes if ("GPU" in demand or not g.gpu) and _take(free, demand)
        )
        where = next(fits, None)
        assert where is not None, (
            f"only {index} of {distributed.num_workers} workers ({demand} each) fit: "
            f"{[(g.name, g.count, dict(g.resources)) for g in groups]}"
        )
        workers.append(where)
    return {"learner": [learner], "workers": workers}
