"""Fixtures of the multi-node tests: one Ray cluster (a head and worker nodes ``a`` and ``b``)
for the module, and one ``star serve`` that joins it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.cluster.local_cluster import LocalRayCluster
from tests.cluster.star_server import StarServer

WORKER_NODES = ("a", "b")


class Cluster(LocalRayCluster):
    """The module's cluster; ``require_worker_nodes()`` brings back nodes a test killed."""

    def require_worker_nodes(self) -> dict[str, str]:
        """Node name -> node id of the head and every worker node, all ALIVE."""
        for name in WORKER_NODES:
            if self.nodes[name].process.poll() is not None:
                self.add_node(name)
        return self.wait_for_nodes({"head", *WORKER_NODES})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    temp_root = Path(
        tempfile.mkdtemp(prefix="star-ray-", dir="/tmp" if Path("/tmp").is_dir() else None)
    )
    cluster = Cluster(root, temp_root)
    try:
        cluster.start()
        for name in WORKER_NODES:
            cluster.add_node(name)
        cluster.wait_for_nodes({"head", *WORKER_NODES})
        yield cluster
    finally:
        leftovers = cluster.stop()
        shutil.rmtree(temp_root, ignore_errors=True)
        assert not leftovers, f"processes of the test cluster outlived it: {leftovers}"


@pytest.fixture(scope="module")
def star(cluster, tmp_path_factory):
    """``star serve --ray-address`` on the module's cluster (its own data directory)."""
    root = tmp_path_factory.mktemp("star")
    server = StarServer(cluster, root / "data", root / "serve.log")
    try:
        yield server.start()
    finally:
        leftovers = server.stop()
        assert not leftovers, f"processes of star serve outlived it: {leftovers}"
