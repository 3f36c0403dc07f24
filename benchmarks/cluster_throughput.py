"""Jobs per hour on a Ray cluster of 1 and of 2 worker nodes, and what Ray costs per job
against the local executor.

Every job is the same small real job: timm's ``test_efficientnet`` at 32 px, random init,
``fine-tune-all`` for ``--epochs`` epochs on the digits sample (1,797 real images), submitted
through the ``JobManager`` exactly as the app submits them.

1. Local executor (the app's worker process): ``--local-jobs`` jobs, one after another.
2. Ray, one node with 1 CPU: ``--jobs`` jobs submitted at once.
3. Ray, two nodes with 1 CPU each: the same ``--jobs`` jobs at once.

The nodes are real raylets started by Ray's ``Cluster`` test utility, on this machine. A
job's *overhead* is its time from leaving the queue to its end, minus its training loop's own
time (``result.wall_s``): scanning, sending the data, starting a Ray worker (which imports
torch), building the model, evaluating, and bringing the run folder back.

Usage: python benchmarks/cluster_throughput.py [--jobs 8] [--local-jobs 4] [--epochs 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TL_STUDIO_HOME", tempfile.mkdtemp(prefix="tl-cluster-bench-"))
os.environ["HF_HUB_OFFLINE"] = "1"

from tl_core.config import TrainConfig  # noqa: E402
from tl_core.jobs import JobManager  # noqa: E402

NODE = {"num_cpus": 1, "object_store_memory": 200 * 1024**2}


def job_config(epochs: int, seed: int) -> TrainConfig:
    return TrainConfig(
        data="digits",
        backbone="test_efficientnet",
        weights="none",
        catalog_only=False,
        image_size=32,
        strategy="fine-tune-all",
        epochs=epochs,
        patience=None,
        seed=seed,
    )


def run_batch(manager: JobManager, n: int, epochs: int, at_once: bool) -> dict[str, Any]:
    """Submit ``n`` jobs (all at once, or each after the last ended) and time them."""
    started = time.perf_counter()
    ids: list[str] = []
    for seed in range(n):
        ids.append(manager.submit(job_config(epochs, seed)))
        if not at_once:
            manager.wait(ids[-1])
    snaps = [manager.wait(i) for i in ids]
    wall = time.perf_counter() - started
    failed = [s.error for s in snaps if s.status != "completed"]
    if failed:
        raise SystemExit(f"jobs failed: {failed}")
    spans = [s.finished_at - s.started_at for s in snaps]
    fits = [s.result["wall_s"] for s in snaps]
    return {
        "jobs": n,
        "wall_s": round(wall, 1),
        "jobs_per_hour": round(n / wall * 3600),
        "job_s_median": round(statistics.median(spans), 2),
        "fit_s_median": round(statistics.median(fits), 2),
        "overhead_s_median": round(statistics.median(s - f for s, f in zip(spans, fits, strict=True)), 2),
        "nodes_used": len({s.node for s in snaps if s.node}),
    }


def ray_batch(nodes: int, n: int, epochs: int) -> dict[str, Any]:
    from ray.cluster_utils import Cluster

    from tl_core.ray_executor import RayExecutor

    cluster = Cluster(initialize_head=True, head_node_args=NODE | {"include_dashboard": False})
    for _ in range(nodes - 1):
        cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    try:
        manager = JobManager(executor=RayExecutor(cluster.address, cpus_per_job=1))
        try:
            manager.wait(manager.submit(job_config(1, 99)))  # the data reaches the nodes' object store once
            return run_batch(manager, n, epochs, at_once=True)
        finally:
            manager.shutdown()
    finally:
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--local-jobs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    figures: dict[str, Any] = {"cpus": os.cpu_count(), "epochs": args.epochs}
    local = JobManager(executor="process")
    try:
        local.wait(local.submit(job_config(1, 99)))  # the worker imports torch once, before timing
        figures["local"] = run_batch(local, args.local_jobs, args.epochs, at_once=False)
    finally:
        local.shutdown()
    figures["ray_1_node"] = ray_batch(1, args.jobs, args.epochs)
    figures["ray_2_nodes"] = ray_batch(2, args.jobs, args.epochs)
    one, two = figures["ray_1_node"], figures["ray_2_nodes"]
    figures["speedup_2_vs_1_node"] = round(two["jobs_per_hour"] / one["jobs_per_hour"], 2)
    figures["ray_overhead_vs_local_s"] = round(one["overhead_s_median"] - figures["local"]["overhead_s_median"], 2)
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
