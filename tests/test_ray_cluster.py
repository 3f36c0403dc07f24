"""Two Ray nodes with one CPU each (Ray's own ``Cluster`` test utility: real raylets, one
machine): the jobs spread over both nodes, each run records the node it ran on, and losing a
node fails only what ran there. The executor joins the test's own connection to the cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from conftest import tiny_config, wait_for
from tl_core.jobs import JobManager
from tl_core.runs import Run

NODE = {"num_cpus": 1, "object_store_memory": 100 * 1024**2}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """The test process joins while the head is the only node, so that it is attached to the
    head's raylet: removing the other node must not take the test's own connection with it."""
    assert not ray.is_initialized()
    cluster = Cluster(initialize_head=True, connect=True, head_node_args=NODE | {"include_dashboard": False})
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def two_nodes(cluster: Cluster) -> Cluster:
    """The head and one worker node (a test before may have removed the worker)."""
    if len(cluster.list_all_nodes()) < 2:
        cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    return cluster


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
    assert [s.node for s in snaps] == [st["node"] for st in statuses]  # the queue's label is the run's
    assert all(st["node"].endswith(f"({st['node_id'][:8]})") for st in statuses)
    assert len(rows) == 2 and all(r["device"].startswith("Ray node ") for r in rows)


@pytest.fixture
def on_two_nodes(two_nodes: Cluster, studio_home: Path) -> Iterator[tuple[JobManager, Any]]:
    """A manager on the two nodes, and the worker node (the one a test may remove)."""
    from tl_core.ray_executor import RayExecutor

    worker = next(n for n in two_nodes.list_all_nodes() if n is not two_nodes.head_node)
    manager = JobManager(executor=RayExecutor(two_nodes.address, cpus_per_job=1))
    yield manager, worker
    manager.shutdown()


def test_a_lost_node_fails_only_its_job_and_the_queue_goes_on(
    on_two_nodes: tuple[JobManager, Any], two_nodes: Cluster, color_folders: Path
) -> None:
    manager, worker = on_two_nodes
    long = tiny_config(color_folders, strategy="fine-tune-all", epochs=500, patience=None)
    ids = [manager.submit(long), manager.submit(long)]  # one on each node
    wait_for(lambda: all(manager.snapshot(i).epoch >= 1 for i in ids), timeout=180)
    on_worker = next(i for i in ids if worker.node_id[:8] in manager.snapshot(i).node)
    survivor = next(i for i in ids if i != on_worker)
    two_nodes.remove_node(worker)
    lost = manager.wait(on_worker, timeout=120)
    assert lost.status == "failed", lost
    assert "died" in lost.error and worker.node_id[:8] in lost.error, lost.error
    assert Run(lost.run_dir).status()["status"] == "failed"
    assert manager.snapshot(survivor).status == "running", manager.snapshot(survivor)  # goes on
    manager.stop(survivor)
    assert manager.wait(survivor, timeout=60).status == "stopped"
    nxt = manager.wait(manager.submit(tiny_config(color_folders, epochs=1)), timeout=120)
    assert nxt.status == "completed", nxt.error
    assert two_nodes.head_node.node_id[:8] in nxt.node


def test_an_idle_worker_on_a_lost_node_is_not_given_the_next_job(
    on_two_nodes: tuple[JobManager, Any], two_nodes: Cluster, color_folders: Path
) -> None:
    manager, worker = on_two_nodes
    short = tiny_config(color_folders, epochs=1)
    first = [manager.wait(i, timeout=180) for i in [manager.submit(short), manager.submit(short)]]
    assert len({s.node for s in first}) == 2 and len(manager.executor._idle) == 2  # warm on both
    two_nodes.remove_node(worker)
    again = [manager.wait(i, timeout=180) for i in [manager.submit(short), manager.submit(short)]]
    assert [s.status for s in again] == ["completed", "completed"], [s.error for s in again]
    assert all(two_nodes.head_node.node_id[:8] in s.node for s in again)
