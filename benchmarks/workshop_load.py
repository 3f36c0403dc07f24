"""A workshop under load: simulated students through the engine, real browsers on the app.

1. Starts ``tl-studio app`` in workshop mode on a fresh studio home.
2. Baseline: a probe job (fine-tune-top on the digits sample with the bundled Lite0) trains
   with no browser open; its epoch times are the reference.
3. Opens ``--browsers`` real Chromium sessions: each joins as a student, picks the sample and
   starts training, then stays on the Train page watching its job (queued or running).
4. With those tabs open, the same probe job trains again, ``--students`` simulated students
   submit jobs through the engine (some up to their quota), and another browser session keeps
   loading the app's pages to time them.
5. Waits for every job, then prints the figures as JSON (and writes them to ``--out``): jobs
   finished, each workspace's longest and shortest queue wait, page-load p50/p95, the probe's
   epoch time with and without browsers, and peak RSS of the app and of the workers.

Every job runs in a worker process, on one device (this machine's CPU or its GPU), so the
queue is the point: it prints how long students waited and whether the tabs slowed training.

Usage: python benchmarks/workshop_load.py [--students 30] [--browsers 8] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_rss_mb(pid: int) -> float | None:
    """VmHWM: the process's peak resident memory, as the kernel counted it."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _cpu_seconds(app_pid: int) -> dict[str, float]:
    """CPU time used so far by the app server, its worker processes and every Chromium process:
    where the cycles of watching go (here the browsers share the server's cores; in a room they
    run on the students' own machines)."""
    import psutil

    def used(p: psutil.Process) -> float:
        try:
            t = p.cpu_times()
            return t.user + t.system
        except psutil.Error:
            return 0.0

    app = psutil.Process(app_pid)
    out = {"app": used(app), "workers": sum(used(p) for p in app.children(recursive=True))}
    for p in psutil.process_iter(["name"]):
        name = "chromium" if "chrom" in (p.info["name"] or "") else p.info["name"] or "?"
        if p.pid != app_pid:
            out[f"all:{name}"] = out.get(f"all:{name}", 0.0) + used(p)
    out["chromium"] = out.get("all:chromium", 0.0)
    return out


def _renice_browsers(niceness: int) -> int:
    import psutil

    count = 0
    for p in psutil.process_iter(["name"]):
        if "chrom" in (p.info["name"] or ""):
            try:
                p.nice(niceness)
                count += 1
            except psutil.Error:
                continue
    return count


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))], 3)


def start_app(home: Path, port: int) -> subprocess.Popen:
    env = os.environ | {
        "TL_STUDIO_HOME": str(home),
        "TL_STUDIO_WORKSHOP": "1",
        "HF_HUB_OFFLINE": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the app did not start")


def probe_config(image_size: int, epochs: int) -> Any:
    from tl_core.config import TrainConfig

    return TrainConfig(
        data="digits",
        data_label="digits (probe)",
        strategy="fine-tune-top",
        image_size=image_size,
        epochs=epochs,
        patience=None,
        device="auto",
    )


def student_config(seed: int) -> Any:
    """What most students run first: the wizard's default on the sample (feature extraction)."""
    from tl_core.config import TrainConfig

    return TrainConfig(
        data="digits", data_label="digits (built-in sample)", image_size=96, epochs=10, seed=seed
    )


def run_probe(manager: Any, workspace: str, image_size: int, epochs: int) -> list[float]:
    snap = manager.wait(manager.submit(probe_config(image_size, epochs), workspace=workspace))
    if snap.status != "completed":
        raise SystemExit(f"probe job {snap.status}: {snap.error}")
    return [round(h["seconds"], 2) for h in snap.history]


def join_and_train(browser: Any, url: str, name: str) -> Any:
    """A student's first minutes: join, pick the sample, accept the defaults, start training."""
    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    page.goto(url)
    page.get_by_label("Your name").fill(name)
    page.get_by_role("button", name="Join").click()
    page.get_by_role("button", name="Start with the sample dataset").click()
    page.get_by_text("1797 usable images").wait_for(timeout=120_000)
    page.get_by_role("button", name="Next: choose a strategy →").click()
    page.get_by_text("Everyday photos: pets").click()  # feature extraction: seconds per student
    page.get_by_text("Recommended: feature extraction").wait_for(timeout=60_000)
    page.get_by_role("button", name="Accept recommendation").click()
    page.get_by_role("button", name="Next: freeze & train →").click()
    page.get_by_role("button", name="Start training").click()
    page.locator('[data-testid="stProgress"], [data-testid="stAlert"]').first.wait_for(timeout=60_000)
    return page


def time_page_loads(browser: Any, url: str, n: int) -> list[float]:
    """Full loads of Home (a new session each time) until its title is on screen."""
    context = browser.new_context()
    page = context.new_page()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        page.goto(url)
        page.get_by_text("Transfer Learning Studio").first.wait_for(timeout=60_000)
        times.append(time.perf_counter() - start)
        time.sleep(0.5)
    context.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--greedy", type=int, default=5, help="students who queue up to their quota")
    parser.add_argument("--browsers", type=int, default=8)
    parser.add_argument("--probe-size", type=int, default=128, help="probe job image size (px)")
    parser.add_argument("--probe-epochs", type=int, default=4)
    parser.add_argument("--page-loads", type=int, default=20)
    parser.add_argument(
        "--browser-nice",
        type=int,
        default=19,
        help="niceness of the Chromium processes: in a room the browsers run on the students' own "
        "machines, so by default they yield this machine's cores to the server (0: compete)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "test-artifacts" / "workshop_load.json")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="tl-workshop-load-"))
    os.environ["TL_STUDIO_HOME"] = str(home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from playwright.sync_api import sync_playwright

    from tl_core.jobs import JobManager
    from tl_core.settings import WORKSHOP_MAX_QUEUED, WORKSHOP_TIME_LIMIT_S
    from tl_core.workspaces import WorkspaceStore

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    app = start_app(home, port)
    manager = JobManager(
        executor="process", max_queued_per_workspace=WORKSHOP_MAX_QUEUED, time_limit_s=WORKSHOP_TIME_LIMIT_S
    )
    store = WorkspaceStore()
    figures: dict[str, Any] = {"students": args.students, "browsers": args.browsers}
    try:
        probe_ws = store.create("Probe")
        # Warm-up (imports, sample written, weights read) so the two probes compare like with like.
        run_probe(manager, probe_ws.id, args.probe_size, 1)
        quiet = run_probe(manager, probe_ws.id, args.probe_size, args.probe_epochs)

        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            # A long job holds the device while the students join, so their jobs queue and
            # their tabs sit watching; then the probe takes the device with every tab open.
            blocker = manager.submit(probe_config(args.probe_size, 500), workspace=probe_ws.id)
            started = time.time()
            tabs = [join_and_train(browser, url, f"Browser {i + 1}") for i in range(args.browsers)]
            figures["browsers_joined_s"] = round(time.time() - started, 1)
            probe_job = manager.submit(
                probe_config(args.probe_size, args.probe_epochs), workspace=probe_ws.id
            )
            manager.stop(blocker)
            manager.wait(blocker)
            reniced = _renice_browsers(args.browser_nice)
            before = _cpu_seconds(app.pid)
            probe = manager.wait(probe_job)
            after = _cpu_seconds(app.pid)
            busy = [round(h["seconds"], 2) for h in probe.history]
            waiting = sum(
                1
                for w in store.list()
                if w.name.startswith("Browser")
                for r in store.runs(w.id).list()
                if r.status in ("queued", "running")
            )
            figures["during_probe"] = {
                "browser_processes_niceness": args.browser_nice,
                "browser_processes_reniced": reniced,
                "browser_jobs_queued_or_waiting": waiting,
                "cpu_s_app_server": round(after["app"] - before["app"], 2),
                "cpu_s_chromium": round(after["chromium"] - before["chromium"], 2),
                "cpu_s_app_workers": round(after["workers"] - before["workers"], 2),
                "probe_wall_s": round(sum(busy), 1),
                "cpu_s_by_process_name": {
                    k[4:]: round(after[k] - before.get(k, 0.0), 2)
                    for k in sorted(after, key=lambda k: before.get(k, 0.0) - after[k])[:8]
                    if k.startswith("all:")
                },
            }

            students = [store.create(f"Student {i + 1:02d}") for i in range(args.students)]
            jobs: list[tuple[str, str]] = []
            for i, ws in enumerate(students):
                jobs.append((ws.id, manager.submit(student_config(i), workspace=ws.id)))
            for i, ws in enumerate(students[: args.greedy]):  # a few queue up to their quota
                for extra in range(WORKSHOP_MAX_QUEUED - 1):
                    jobs.append(
                        (ws.id, manager.submit(student_config(100 * (i + 1) + extra), workspace=ws.id))
                    )
            loads = time_page_loads(browser, url, args.page_loads)
            for _, job in jobs:
                manager.wait(job, timeout=3600)
            # The browsers' own jobs, in the app's queue: done when every workspace's run is.
            deadline = time.monotonic() + 1800
            browser_runs: list[Any] = []
            while time.monotonic() < deadline:
                browser_runs = [
                    r for w in store.list() if w.name.startswith("Browser") for r in store.runs(w.id).list()
                ]
                if len(browser_runs) >= args.browsers and all(
                    r.status in ("completed", "stopped", "failed") for r in browser_runs
                ):
                    break
                time.sleep(2)
            browser.close()

        snaps = [manager.snapshot(job) for _, job in jobs]
        waits: dict[str, list[float]] = {}
        for snap in snaps:
            waits.setdefault(snap.workspace, []).append(snap.started_at - snap.submitted_at)
        first_waits = [min(w) for w in waits.values()]
        worker_pids = [p.pid for p in __import__("psutil").Process(app.pid).children(recursive=True)]
        figures |= {
            "engine_jobs": len(snaps),
            "engine_jobs_completed": sum(s.status == "completed" for s in snaps),
            "browser_jobs": len(browser_runs),
            "browser_jobs_completed": sum(r.status == "completed" for r in browser_runs),
            "tabs_open_during_probe": len(tabs),
            "queue_wait_s": {
                "first_job_shortest": round(min(first_waits), 1),
                "first_job_longest": round(max(first_waits), 1),
                "any_job_longest": round(max(max(w) for w in waits.values()), 1),
                "greedy_students_last_job": round(max(max(waits[w.id]) for w in students[: args.greedy]), 1),
            },
            "page_load_s": {"p50": _percentile(loads, 0.5), "p95": _percentile(loads, 0.95), "n": len(loads)},
            "probe_epoch_s": {
                "no_browser": quiet,
                "with_browsers": busy,
                "median_ratio": round(statistics.median(busy) / statistics.median(quiet), 3),
            },
            "peak_rss_mb": {
                "app": _peak_rss_mb(app.pid),
                "app_workers": [_peak_rss_mb(p) for p in worker_pids],
                "engine_worker": [_peak_rss_mb(p) for p in manager.executor.pids().values()],
            },
            "device": probe.device,
        }
    finally:
        manager.shutdown()
        app.terminate()
        app.wait(timeout=30)
    print(json.dumps(figures, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
