"""Jobs per hour on a Ray cluster of 1 and of 2 worker nodes, and what Ray costs per job
against the local executor.

Every job is the same small real job: timm's ``test_efficientnet`` at 32 px, random init,
``fine-tune-all`` for ``--epochs`` epochs on the digits sample (1,797 real images), submitted
through the ``JobManager`` exactly as the app submits them.

1. Local executor (the app's worker process): ``--sequential`` jobs, one after another.
2. Ray, one node with 1 CPU: ``--sequential`` jobs one after another, then ``--jobs`` jobs
   submitted at once.
3. Ray, two nodes with 1 CPU each: the same ``--jobs`` jobs at once.

The nodes are real raylets started by Ray's ``Cluster`` test utility, on this machine. A
job's *overhead* (measured one job at a time) is its time from submit to end, minus its
training loop's own time (``result.wall_s``): scanning, sending the data, handing the job to a
worker, building the model, evaluating, and bringing the run folder back. Each configuration
first runs one untimed job, so workers have imported torch and nodes hold the data.

Usage: python benchmarks/cluster_throughput.py [--jobs 8] [--sequential 4] [--epochs 2] [--out FILE]
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
    """Submit ``n`` jobs (all at once, or each after the last ended) and time them; a job's
    span counts from its submission, so only one-at-a-time batches give its overhead."""
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
    fits = [s.result["wall_s"] for s in snaps]
    out = {
        "jobs": n,
        "wall_s": round(wall, 1),
        "jobs_per_hour": round(n / wall * 3600),
        "fit_s_median": round(statistics.median(fits), 2),
        "nodes_used": len({s.node for s in snaps if s.node}),
    }
    if not at_once:
        spans = [s.finished_at - s.submitted_at for s in snaps]
        out["job_s_median"] = round(statistics.median(spans), 2)
        out["overhead_s_median"] = round(
            statistics.median(s - f for s, f in zip(spans, fits, strict=True)), 2
        )
    return out


def first_job(manager: JobManager) -> float:
    """The untimed warm-up's overhead: on a cold worker, it includes importing torch."""
    snap = manager.wait(manager.submit(job_config(1, 99)))
    return round(snap.finished_at - snap.submitted_at - snap.result["wall_s"], 2)


def ray_batches(nodes: int, n: int, sequential: int, epochs: int) -> dict[str, Any]:
    from ray.cluster_utils import Cluster

    from tl_core.ray_executor import RayExecutor

    cluster = Cluster(initialize_head=True, head_node_args=NODE | {"include_dashboard": False})
    for _ in range(nodes - 1):
        cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    try:
        manager = JobManager(executor=RayExecutor(cluster.address, cpus_per_job=1))
        try:
            out: dict[str, Any] = {"first_job_overhead_s": first_job(manager)}  # a new worker, the data sent
            out["at_once"] = run_batch(manager, n, epochs, at_once=True)
            if sequential:
                out["one_at_a_time"] = run_batch(manager, sequential, epochs, at_once=False)
            return out
        finally:
            manager.shutdown()
    finally:
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--sequential", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    figures: dict[str, Any] = {"cpus": os.cpu_count(), "epochs": args.epochs}
    local = JobManager(executor="process")
    try:
        figures["local"] = {"first_job_overhead_s": first_job(local)}  # the worker imports torch
        figures["local"]["one_at_a_time"] = run_batch(local, args.sequential, args.epochs, at_once=False)
    finally:
        local.shutdown()
    figures["ray_1_node"] = ray_batches(1, args.jobs, args.sequential, args.epochs)
    figures["ray_2_nodes"] = ray_batches(2, args.jobs, 0, args.epochs)
    one, two = figures["ray_1_node"]["at_once"], figures["ray_2_nodes"]["at_once"]
    figures["speedup_2_vs_1_node"] = round(two["jobs_per_hour"] / one["jobs_per_hour"], 2)
    overheads = [figures[k]["one_at_a_time"]["overhead_s_median"] for k in ("ray_1_node", "local")]
    figures["ray_overhead_per_job_vs_local_s"] = round(overheads[0] - overheads[1], 2)
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
