"""Where a job's actors go (services/cluster/placement.py) and what the job's log says about
it; the learner's events and the metrics exported from them (services/cluster/events.py,
metrics.py). Pure functions of the cluster's resources: no Ray needed."""

from __future__ import annotations

import dataclasses

import pytest

from services.cluster import events, placement
from services.cluster.metrics import METRICS, prometheus_name
from services.domain import DistributedConfig


def test_a_cpu_worker_asks_for_its_cpus_and_runs_jax_on_the_cpu():
    options, device = placement.worker_options(DistributedConfig(cpus_per_worker=3), 0.0)
    assert device == "cpu" and options["num_cpus"] == 3 and "num_gpus" not in options
    assert options["runtime_env"]["env_vars"]["JAX_PLATFORMS"] == "cpu"


def test_a_gpu_worker_shares_its_card_without_preallocating_it():
    options, device = placement.worker_options(DistributedConfig(worker_resources={"a": 1}), 0.25)
    assert device == "gpu" and options["num_gpus"] == 0.25 and options["resources"] == {"a": 1}
    env = options["runtime_env"]["env_vars"]
    assert env == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "JAX_PLATFORMS": ""}


@pytest.mark.parametrize(
    ("cluster", "home"),
    [({"CPU": 8.0, "star_learner": 4.0}, True), ({"CPU": 8.0, "GPU": 1.0}, False)],
)
def test_the_learner_asks_for_its_home_when_the_cluster_has_one(cluster, home):
    options, has_home = placement.learner_options(cluster)
    assert has_home is home and options["num_cpus"] == 0
    assert options.get("resources") == ({"star_learner": 1} if home else None)


def _placement(*workers, learner="node-l") -> events.Placement:
    return events.Placement(
        tuple(workers), learner_node=learner, learner_host="host-l", learner_pid=42
    )


def _worker(index, cores=(), note="", device="cpu"):
    return events.WorkerPlacement(
        index, f"node-{index}", "h", "10.0.0.1", device, 100 + index, cores, note
    )


def _plan(home: bool) -> placement.Plan:
    return placement.Plan({}, "cpu", {}, home)


def test_the_log_names_each_worker_its_cores_and_the_learners_home():
    lines = placement.describe(_placement(_worker(1, (1,)), _worker(0, (0,))), _plan(True))
    assert lines == [
        ("INFO", "workers: 0@h(cpu, cores 0), 1@h(cpu, cores 1)"),
        ("INFO", "learner: host-l (node node-l, pid 42)"),
    ]


def test_an_unpinned_worker_and_a_learner_without_a_home_are_warnings():
    lines = placement.describe(_placement(_worker(0, (), "no free core")), _plan(False))
    assert ("WARNING", "worker 0 runs unpinned: no free core") in lines
    assert any(
        level == "WARNING"
        and "no node offers the star_learner resource" in message
        and "host-l" in message
        for level, message in lines
    )


def test_a_gpu_worker_without_cores_is_not_an_unpinned_warning():
    plan = placement.Plan({}, "gpu", {}, True)
    lines = placement.describe(_placement(_worker(0, device="gpu")), plan)
    assert [level for level, _ in lines] == ["INFO", "INFO"]


def test_a_placement_report_becomes_a_worker_placement():
    report = {
        "worker": 2,
        "node_id": "n",
        "host": "h",
        "ip": "i",
        "device": "cpu",
        "pid": 7,
        "cores": [0, 1],
        "extra": "ignored",
    }
    assert events.placement_of(report) == events.WorkerPlacement(2, "n", "h", "i", "cpu", 7, (0, 1))


def test_every_exported_metric_reads_a_field_of_the_step_record():
    fields = {f.name for f in dataclasses.fields(events.StepRecord)} | {"step"}
    assert {m.field for m in METRICS} <= fields
    assert prometheus_name(METRICS[0]) == "ray_star_meta_loss"
    counters = [prometheus_name(m) for m in METRICS if m.kind == "counter"]
    assert "ray_star_dropped_estimates_total" in counters


def test_a_step_records_metrics_leave_the_increments_to_the_runner():
    record = events.StepRecord(0.5, 0.1, 100.0, 2, 1, 1, 2, 3, 2, 0.25)
    metrics = record.metrics()
    assert metrics["meta_loss"] == 0.5 and metrics["estimates"] == 2.0
    assert not {"dropped_now", "stale_now", "restarts_now"} & set(metrics)


def test_a_log_event_refuses_an_unknown_level():
    with pytest.raises(ValueError, match="level must be one of"):
        events.Log("DEBUG", "x")


def test_a_gpu_job_whose_worker_computes_on_the_cpu_is_a_warning():
    plan = placement.Plan({}, "gpu", {}, True)
    lines = placement.describe(_placement(_worker(0, device="cpu")), plan)
    assert (
        "WARNING",
        "worker 0 computes on cpu, not gpu (its node has no usable GPU for JAX)",
    ) in lines
