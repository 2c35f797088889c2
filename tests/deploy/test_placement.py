"""Where a job's actors land on the clusters of deploy/, read offline from the manifests.

Every example job (each file in deploy/examples/, each `star submit` line of deploy/README.md,
parsed by the real `star` CLI and converted by the service's own spec conversion) must fit both
clusters as they start (tests/deploy/capacity.py: workers x CPUs, GPUs and custom resources per
worker, plus the learner). The learner's home: exactly one node group offers `star_learner`, a
CPU group that is neither the head nor a GPU group, with room for the learners of as many jobs as
the service runs at once (`--max-jobs`).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from services.api.convert.spec import spec_from_proto
from services.cli.jobspec import load_spec_file, spec_from_args, spec_from_dict
from services.cli.main import build_parser
from services.domain.spec import DistributedConfig
from tests.deploy import DEPLOY, REPO
from tests.deploy.capacity import (
    LEARNER_DEMAND,
    LEARNER_RESOURCE,
    NodeGroup,
    kuberay_groups,
    place,
    ray_up_groups,
)
from tests.deploy.manifests import (
    README,
    head_flags,
    ray_container,
    ray_up_config,
    raycluster,
    worker_group,
)

EXAMPLES = DEPLOY / "examples"


def clusters() -> dict[str, list[NodeGroup]]:
    return {"kuberay": kuberay_groups(raycluster()), "ray up": ray_up_groups(ray_up_config())}


def readme_submit_lines() -> list[str]:
    """The `star submit ...` commands of deploy/README.md's shell blocks."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("star submit ")]


def distributed_of_command(line: str) -> DistributedConfig:
    """The DistributedConfig the server makes of what `line` sends (run from the repo root)."""
    args = build_parser().parse_args(shlex.split(line, comments=True)[1:])
    if args.spec_file is not None:
        args.spec_file = REPO / args.spec_file
        assert args.spec_file.is_file(), f"{line}: {args.spec_file} is not in the repository"
    return spec_from_proto(spec_from_args(args)).distributed


def distributed_of_file(path: Path) -> DistributedConfig:
    return spec_from_proto(spec_from_dict(load_spec_file(path), str(path))).distributed


def readme_json_specs() -> list[str]:
    return re.findall(r"```json\n(.*?)```", README.read_text(), re.S)


def example_jobs() -> dict[str, DistributedConfig]:
    """Every job deploy/ shows: its spec files, the JSON specs and `star submit` lines of its
    README, by where they come from."""
    jobs = {str(p.relative_to(REPO)): distributed_of_file(p) for p in sorted(EXAMPLES.glob("*"))}
    for block in readme_json_specs():
        jobs[block] = spec_from_proto(spec_from_dict(json.loads(block))).distributed
    jobs.update({line: distributed_of_command(line) for line in readme_submit_lines()})
    return jobs


# --- the example jobs ---------------------------------------------------------------------------


def test_readme_submits_the_example_files_and_shows_them_as_they_are():
    submitted = {shlex.split(line, comments=True)[2] for line in readme_submit_lines()}
    assert submitted == {str(p.relative_to(REPO)) for p in EXAMPLES.iterdir()}
    shown = readme_json_specs()
    files = {json.dumps(json.loads(p.read_text())) for p in EXAMPLES.glob("*.json")}
    assert shown and {json.dumps(json.loads(block)) for block in shown} <= files


@pytest.mark.parametrize("cluster", ["kuberay", "ray up"])
def test_every_example_job_fits_the_cluster(cluster):
    groups = clusters()[cluster]
    jobs = example_jobs()
    for source, distributed in jobs.items():
        placed = place(distributed, groups)  # AssertionError naming what does not fit
        assert placed["learner"] == ["learner"], source
        assert len(placed["workers"]) == distributed.num_workers, source
    assert len(jobs) >= 6  # two files, one JSON block and three commands in the README


def test_the_gpu_example_shares_the_one_gpu_and_the_cpu_example_stays_off_it():
    for cluster, groups in clusters().items():
        gpu_job = distributed_of_file(EXAMPLES / "digits-star.json")
        assert gpu_job.gpus_per_worker is None  # automatic: the workers share the cluster's GPUs
        assert gpu_job.resolve_gpus(1.0) == 1 / gpu_job.num_workers
        gpu_groups = {g.name for g in groups if g.gpu}
        assert set(place(gpu_job, groups)["workers"]) == gpu_groups, cluster
        cpu_job = distributed_of_file(EXAMPLES / "digits-star-cpu.yaml")
        assert cpu_job.cpus_per_worker == 2 and cpu_job.gpus_per_worker == 0
        assert not set(place(cpu_job, groups)["workers"]) & gpu_groups, cluster


def test_a_job_asking_one_gpu_per_worker_beyond_the_clusters_gpus_does_not_fit():
    """The check itself: the README's former job (4 workers x 1 GPU on a 1-GPU cluster)."""
    former = DistributedConfig(num_workers=4, gpus_per_worker=1)
    pinned = DistributedConfig(num_workers=4, worker_resources={"star_gpu_node": 0.5})
    too_wide = DistributedConfig(num_workers=64, gpus_per_worker=0, cpus_per_worker=2)
    for groups in clusters().values():
        with pytest.raises(
            AssertionError, match=r"only 1 of 4 workers \(\{'CPU': 1.0, 'GPU': 1.0\}"
        ):
            place(former, groups)
        with pytest.raises(AssertionError, match="only 2 of 4 workers"):
            place(pinned, groups)  # a quarter of the GPU each, but half a star_gpu_node
        with pytest.raises(AssertionError, match="of 64 workers"):
            place(too_wide, groups)


# --- the learners' home ----------------------------------------------------------------------


def test_exactly_the_learner_group_offers_star_learner_and_it_is_a_small_cpu_group():
    for cluster, groups in clusters().items():
        offering = [g for g in groups if g.resources.get(LEARNER_RESOURCE, 0) > 0]
        assert [g.name for g in offering] == ["learner"], cluster
        (learner,) = offering
        assert not learner.head and not learner.gpu, cluster
        # It offers Ray no CPU: workers never land there and take the learners' cores.
        assert learner.resources.get("CPU", 0) == 0, cluster
        assert learner.count == 1, cluster
    group = worker_group(raycluster(), "learner")
    resources = ray_container(group["template"])["resources"]
    assert not any("gpu" in name for name in {**resources["requests"], **resources["limits"]})
    assert "tolerations" not in group["template"]["spec"]  # stays off tainted GPU nodes


def max_jobs() -> dict[str, int]:
    """`star serve --max-jobs` of each deployment's head command."""
    head = ray_container(raycluster()["spec"]["headGroupSpec"]["template"])
    (kuberay_command,) = head["command"]
    serve = next(c for c in ray_up_config()["head_start_ray_commands"] if "nohup" in c)
    return {
        "kuberay": int(head_flags(kuberay_command.strip("(&) "))["--max-jobs"]),
        "ray up": int(head_flags(serve.split("nohup", 1)[1].split(">", 1)[0])["--max-jobs"]),
    }


def test_learner_nodes_hold_the_learners_of_every_job_the_service_runs_at_once():
    for cluster, groups in clusters().items():
        jobs = max_jobs()[cluster]
        assert jobs >= 1, cluster
        learners = [g for g in groups if g.resources.get(LEARNER_RESOURCE, 0) > 0]
        for name, amount in LEARNER_DEMAND.items():
            offered = sum(g.count * g.resources.get(name, 0) for g in learners)
            assert offered >= jobs * amount, (cluster, name, offered)


def test_readme_sizes_the_learner_node_as_the_manifests_do():
    group = worker_group(raycluster(), "learner")
    requests = ray_container(group["template"])["resources"]["requests"]
    memory = requests["memory"].replace("Gi", " GiB")
    jobs = max_jobs()["kuberay"]
    sentence = (
        f"the {requests['cpu']} CPUs and {memory} here hold the learners of the {jobs} jobs "
        f"`--max-jobs {jobs}` lets run at once"
    )
    assert sentence in " ".join(README.read_text().split())
    learners = ray_up_config()["available_node_types"]["learner"]["resources"]
    assert learners[LEARNER_RESOURCE] == jobs
