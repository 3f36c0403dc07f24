"""Two Ray nodes with one CPU each (Ray's own ``Cluster`` test utility: real raylets, one
machine): the jobs spread over both nodes, and each run records the node it ran on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from conftest import tiny_config
from tl_core.jobs import JobManager
from tl_core.runs import Run

NODE = {"num_cpus": 1, "object_store_memory": 100 * 1024**2}


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[Cluster]:
    assert not ray.is_initialized()  # this module joins its own cluster by address
    cluster = Cluster(initialize_head=True, head_node_args=NODE | {"include_dashboard": False})
    cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_jobs_spread_over_the_nodes_and_each_records_its_node(
    two_nodes: Cluster, studio_home: Path, color_folders: Path
) -> None:
    from tl_core.ray_executor import RayExecutor

    manager = JobManager(executor=RayExecutor(two_nodes.address, cpus_per_job=1))
    try:
        assert manager._limit("ray") == 2  # one job per node's CPU
        ids = [manager.submit(tiny_config(color_folders, epochs=2, seed=s)) for s in (0, 1)]
        snaps = [manager.wait(i, timeout=180) for i in ids]
        rows = manager.executor.describe()
    finally:
        manager.shutdown()
    assert all(s.status == "completed" for s in snaps), [s.error for s in snaps]
    statuses = [Run(s.run_dir).status() for s in snaps]
    node_ids = [st["node_id"] for st in statuses]
    assert sorted(node_ids) == sorted(n.node_id for n in two_nodes.list_all_nodes())  # one job each
    assert [s.node for s in snaps] == [f"{st['node']} ({st['node_id'][:8]})" for st in statuses]
    assert len(rows) == 2 and all(r["device"].startswith("Ray node ") for r in rows)
