"""The Lessons page's experiments on the digits sample, as the README quotes them.

Runs "Does pretraining help?" and the forgetting preset exactly as the page does (the same
runs, one time budget each, queued together), waits, and prints each run's status line and the
verdict. Budgets are wall-clock, so run it on an otherwise idle machine.

Usage: python benchmarks/lessons.py [--pretraining-budget 120] [--forgetting-budget 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tl_core import experiments
from tl_core.config import TrainConfig
from tl_core.jobs import JobManager
from tl_core.workspaces import SOLO


def run(manager: JobManager, key: str, budget_s: float) -> None:
    cfg = TrainConfig(data="digits", data_label="digits", backbone="efficientnet_lite0")
    started = time.perf_counter()
    record = experiments.start(manager, SOLO, key, cfg, budget_s)
    for job in manager.jobs(SOLO):
        manager.wait(job.job_id)
    view = experiments.collect(manager.runs(SOLO), record)
    print(f"\n## {experiments.EXPERIMENTS[key].title} ({budget_s:.0f} s per run)")
    for r in view.runs:
        print(f"- {r.label}: {experiments.status_line(r)}")
    print(view.verdict())
    print(f"(whole experiment {time.perf_counter() - started:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretraining-budget", type=float, default=120.0)
    ap.add_argument("--forgetting-budget", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manager = JobManager(Path(tmp) / "runs")
        try:
            run(manager, "pretraining", args.pretraining_budget)
            run(manager, "forgetting", args.forgetting_budget)
        finally:
            manager.shutdown()


if __name__ == "__main__":
    main()
