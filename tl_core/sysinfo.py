"""What the machine is doing, for the instructor: device memory and load, worker memory.

Reads ``nvidia-smi`` and ``psutil`` rather than importing torch, so the app's process stays
small (its heap is what Streamlit's reruns walk).
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import psutil


def gpu_stats() -> list[dict[str, Any]]:
    """One row per NVIDIA GPU, or nothing when there is none (or no driver tool)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    query = "index,name,memory.used,memory.total,utilization.gpu"
    try:
        out = subprocess.run(
            [smi, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.strip().splitlines():
        index, name, used, total, util = (part.strip() for part in line.split(","))
        try:
            float(used), float(total), float(util)
        except ValueError:  # "[N/A]" on MIG slices and some virtual GPUs
            continue
        rows.append(
            {
                "device": f"cuda:{index}",
                "name": name,
                "memory used (GB)": round(float(used) / 1024, 1),
                "memory total (GB)": round(float(total) / 1024, 1),
                "utilisation (%)": float(util),
            }
        )
    return rows


def cpu_stats() -> dict[str, Any]:
    mem = psutil.virtual_memory()
    return {
        "device": "cpu",
        "name": f"{psutil.cpu_count()} cores",
        "memory used (GB)": round((mem.total - mem.available) / 1024**3, 1),
        "memory total (GB)": round(mem.total / 1024**3, 1),
        "utilisation (%)": psutil.cpu_percent(interval=None),
    }


def device_stats() -> list[dict[str, Any]]:
    return [*gpu_stats(), cpu_stats()]


def process_rss_mb(pid: int) -> float | None:
    """Resident memory of a process (a worker), or None if it is gone."""
    try:
        return round(psutil.Process(pid).memory_info().rss / 1024**2, 1)
    except psutil.Error:
        return None
