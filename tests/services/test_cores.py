"""Core claims (``services.cluster.cores``) across real processes: disjoint, released when the
holder dies (SIGKILL included), unpinned when too few cores are free; every thread follows."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from services.cluster import cores
from tests.services.core_holder import Holder

ALLOWED = sorted(os.sched_getaffinity(0))
# Cores the tests hand their holders: enough to show disjoint claims, few enough for any machine.
USED = ALLOWED[:3]


@pytest.fixture
def holders(tmp_path):
    started: list[Holder] = []

    def start(count: int, allowed: list[int] = USED, thread: bool = False) -> Holder:
        started.append(Holder(tmp_path / "claims", count, allowed, thread))
        return started[-1]

    try:
        yield start
    finally:
        for holder in started:
            holder.stop()


@pytest.mark.processes  # holder processes
def test_claims_are_disjoint_and_the_last_process_runs_unpinned(holders):
    pinned = [holders(1) for _ in USED]
    extra = holders(1)
    claimed = [h.cores for h in pinned]
    assert sorted(c for cs in claimed for c in cs) == USED  # one core each, no core twice
    for holder in pinned:
        assert holder.allowed_list() == set(holder.cores)
    assert extra.cores == [] and f"0 of the {len(USED)}" in extra.report["reason"]
    assert extra.allowed_list() == set(USED)  # left as it was


@pytest.mark.processes  # holder processes
def test_a_sigkilled_holder_frees_its_cores(holders):
    first = holders(len(USED))
    assert first.cores == USED
    assert holders(1).cores == []
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    assert holders(len(USED)).cores == USED


@pytest.mark.processes  # holder processes
def test_fewer_free_cores_than_asked_claims_none(holders):
    assert holders(len(USED) + 1).cores == []
    if len(USED) < 2:
        pytest.skip("needs 2 allowed cores")
    one = holders(1)
    both = holders(len(USED))  # one core is taken: it claims nothing, not the rest
    assert both.cores == [] and both.allowed_list() == set(USED)
    one.stop()
    assert holders(len(USED)).cores == USED  # the partial claim was given back


@pytest.mark.processes  # holder processes
def test_every_thread_follows_the_claim(holders):
    holder = holders(1, thread=True)
    threads = holder.report["threads"]
    assert len(threads) >= 2  # the main thread and the one started before the claim
    assert all(affinity == holder.cores for affinity in threads.values())


def test_claim_directory(monkeypatch, tmp_path):
    monkeypatch.setenv(cores.CLAIM_DIR_ENV, str(tmp_path))
    assert cores.claim_dir() == tmp_path
    monkeypatch.delenv(cores.CLAIM_DIR_ENV)
    assert cores.claim_dir().name == cores.CLAIM_DIR_NAME
    with pytest.raises(ValueError, match="count"):
        cores.claim_cores(0, tmp_path)


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.mark.parametrize(
    ("cgroup", "files", "quota"),
    [
        # cgroup v2, a Kubernetes pod's limit on the pod's cgroup, none on the container's
        (
            "0::/kubepods/pod1/ctr\n",
            {"kubepods/pod1/cpu.max": "200000 100000\n", "kubepods/pod1/ctr/cpu.max": "max 100000"},
            2.0,
        ),
        # cgroup v1, Docker's --cpus=1.5 on the cpu,cpuacct hierarchy
        (
            "4:memory:/docker/a\n3:cpu,cpuacct:/docker/a\n",
            {
                "cpu,cpuacct/docker/a/cpu.cfs_quota_us": "150000",
                "cpu,cpuacct/docker/a/cpu.cfs_period_us": "100000",
            },
            1.5,
        ),
        (
            "3:cpu,cpuacct:/\n",
            {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
            None,
        ),
        ("0::/\n", {}, None),  # no quota files at all
    ],
)
def test_cpu_quota_of_the_cgroup_and_those_above(tmp_path, cgroup, files, quota):
    root = tmp_path / "cgroup"
    write(root, files)
    (tmp_path / "self-cgroup").write_text(cgroup)
    assert cores.cpu_quota(tmp_path / "self-cgroup", root) == quota
