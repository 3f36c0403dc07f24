"""The LR range test: its suggestion rules on hand-made curves, the test on synthetic problems
whose good LR range is known, stopping, and real ``lr-find`` jobs on a tiny timm model."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import TINY_MODEL, tiny_config
from tl_core import lr_finder
from tl_core.freezing import HEAD, describe_backbone
from tl_core.jobs import JobManager
from tl_core.lr_finder import (
    Curve,
    format_lr,
    load_result,
    lr_schedule,
    optimizer_step,
    range_test,
    round_lr,
    smooth,
    suggest,
)
from tl_core.runs import Run
from tl_core.ui_text import trained_runs


# -- small pieces ---------------------------------------------------------------------------------
def test_lr_text_and_schedule() -> None:
    assert [format_lr(x) for x in (3.1e-4, 0.0028, 0.5, 1.0)] == ["3e-4", "3e-3", "5e-1", "1e0"]
    assert round_lr(0.00281) == 0.003
    lrs = lr_schedule(100)
    assert lrs[0] == pytest.approx(1e-7) and lrs[-1] == pytest.approx(10.0)
    ratios = np.diff(np.log10(lrs))
    assert np.allclose(ratios, ratios[0])  # evenly spaced on a log axis
    assert lr_finder.plan_steps(500) == 100  # a big train set: fastai's 100 steps
    assert lr_finder.plan_steps(8) == 40  # a small one: at most 5 passes over it
    assert lr_finder.plan_steps(1) == lr_finder.MIN_STEPS


# -- the rules on hand-made curves --------------------------------------------------------------------
def descent(lrs: list[float], middle: float = 1e-3, noise: float = 0.0, seed: int = 0) -> list[float]:
    """A loss that sits at 2.3, falls to 0.2 around ``middle`` (over ~1.5 decades), then blows
    up above 100x ``middle``: the shape of a real range test."""
    rng = np.random.default_rng(seed)
    out = []
    for lr in lrs:
        x = math.log10(lr / middle)
        loss = 0.2 + 2.1 / (1 + math.exp(4 * x)) + (0.3 * math.exp(2.5 * (x - 2)) if x > 1.5 else 0)
        out.append(loss * (1 + noise * rng.standard_normal()))
    return out


def test_valley_picks_two_thirds_down_the_descent() -> None:
    lrs = lr_schedule(100)
    sug = suggest(lrs, descent(lrs))
    assert sug.rule == "valley"
    first, last = (lrs[i] for i in sug.span)
    # 10% of the fall is done at middle * 10**-0.55, 90% at middle * 10**0.55.
    assert 1e-3 * 10**-0.7 < first < 1e-3 * 10**-0.4 and 1e-3 * 10**0.4 < last < 1e-3 * 10**0.7
    assert first < sug.lr < last
    position = math.log(sug.lr / first) / math.log(last / first)
    assert position == pytest.approx(2 / 3, abs=0.08)
    assert format_lr(sug.lr) in sug.reason and "Valley" in sug.reason


def test_a_noisy_plateau_does_not_stretch_the_valley() -> None:
    lrs = lr_schedule(100)
    for seed in range(5):
        noisy = descent(lrs, noise=0.08, seed=seed)
        sug = suggest(lrs, smooth(noisy))
        assert sug.rule == "valley"
        assert lrs[sug.span[0]] > 1e-5, "the valley started on the plateau"
        assert 3e-4 < sug.lr < 1e-2


def test_an_abrupt_drop_falls_back_to_steepest_descent() -> None:
    lrs = lr_schedule(60)
    cliff = [2.3 if lr < 1e-3 else 0.4 for lr in lrs]
    sug = suggest(lrs, cliff)
    assert sug.rule == "steepest"
    assert sug.lr == pytest.approx(max(lr for lr in lrs if lr < 1e-3))
    assert "Steepest" in sug.reason


def test_a_suggestion_above_what_the_freeze_map_takes_is_capped() -> None:
    lrs = lr_schedule(100)
    sug = suggest(lrs, descent(lrs, middle=3.0))  # still falling at the end of the range
    assert sug.lr == lr_finder.MAX_LR and "the largest LR the freeze map takes" in sug.reason


@pytest.mark.parametrize(
    "losses",
    [
        [2.3] * 50,  # flat: nothing learned (too few images, or a dead model)
        [2.3 * (1 + 0.01 * math.sin(i)) for i in range(50)],  # wiggles, no descent
        [2.3 + 0.05 * i for i in range(50)],  # only rises
    ],
)
def test_no_suggestion_when_the_loss_never_goes_down(losses: list[float]) -> None:
    sug = suggest(lr_schedule(50), losses)
    assert sug.lr is None and sug.rule == ""
    assert "never clearly went down" in sug.reason


def test_no_suggestion_from_a_curve_too_short_to_read() -> None:
    sug = suggest(lr_schedule(8), [2.3, 2.0, 1.5, 1.0, 0.8, 5.0, 20.0, 50.0])
    assert sug.lr is None and "too few" in sug.reason


def test_smoothing_is_centred() -> None:
    """A centred average doesn't drag the curve to the right (an EMA would)."""
    lrs = lr_schedule(100)
    clean = descent(lrs)

    def halfway(losses: list[float]) -> int:
        return next(i for i, loss in enumerate(losses) if loss < 1.25)

    assert abs(halfway(smooth(clean)) - halfway(clean)) <= 1


# -- the test loop ---------------------------------------------------------------------------------------
def test_range_test_ends_when_the_loss_blows_up_or_is_nan() -> None:
    lrs = lr_schedule(100)
    curve = range_test(lambda lr: 1.0 if lr < 1e-2 else 1.0 + 1e4 * lr, lrs)
    assert curve.ended == "diverged" and len(curve.lrs) < 100
    assert curve.lrs[-1] > 1e-2 and len(curve.smoothed) == len(curve.losses)
    curve = range_test(lambda lr: 1.0 if lr < 1e-3 else math.nan, lrs)
    assert curve.ended == "diverged" and all(lr < 1e-3 for lr in curve.lrs)


def test_range_test_stops_within_one_batch() -> None:
    stop = threading.Event()
    calls: list[float] = []

    def step(lr: float) -> float:
        calls.append(lr)
        if len(calls) == 7:
            stop.set()
        return 1.0

    curve = range_test(step, lr_schedule(100), stop=stop)
    assert curve.ended == "stopped" and len(calls) == 7 and len(curve.lrs) == 7


def test_each_param_group_moves_at_its_ratio_of_the_head_lr() -> None:
    head, body = nn.Linear(2, 2), nn.Linear(2, 2)
    optimizer = torch.optim.SGD(
        [{"params": body.parameters(), "lr_ratio": 0.07}, {"params": head.parameters()}], lr=1.0
    )
    batches = iter([(torch.ones(4, 2), torch.zeros(4, dtype=torch.long))] * 2)
    step = optimizer_step(optimizer, batches, lambda x, y: nn.functional.cross_entropy(head(body(x)), y))
    loss = step(0.01)
    assert math.isfinite(loss)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.0007, 0.01])


# -- synthetic problems with a known good LR range ---------------------------------------------------
@pytest.fixture
def one_thread() -> Any:
    """Tiny models on a busy 2-core machine: a second intra-op thread only waits (measured
    1.45 s vs 0.08 s for 100 AdamW steps of a linear model)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _batches(x: torch.Tensor, y: torch.Tensor, seed: int) -> Any:
    generator = torch.Generator().manual_seed(seed)
    while True:
        for idx in torch.randperm(len(y), generator=generator).split(32):
            yield x[idx], y[idx]


def _least_squares(scale: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Linear regression with inputs scaled by ``scale``; returns the Hessian's extreme
    eigenvalues too, which fix the good LR range of plain SGD."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 8, generator=g) * scale
    y = x @ torch.randn(8, 1, generator=g) / scale + 0.1 * torch.randn(512, 1, generator=g)
    eig = torch.linalg.eigvalsh(2 * x.T @ x / len(x))  # MSE's Hessian in the weights
    return x, y, eig.min().item(), eig.max().item()


def _find(x: torch.Tensor, y: torch.Tensor, loss: nn.Module, outputs: int, opt: str, seed: int) -> Any:
    torch.manual_seed(seed)
    model = nn.Linear(x.shape[1], outputs)
    optimizer = (torch.optim.SGD if opt == "sgd" else torch.optim.AdamW)(model.parameters(), lr=1.0)
    step = optimizer_step(optimizer, _batches(x, y, seed), lambda a, b: loss(model(a), b))
    curve = range_test(step, lr_schedule(100))
    return suggest(curve.lrs, curve.smoothed)


@pytest.mark.parametrize("scale", [1.0, 10.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_least_squares_suggestion_is_stable_and_fast(scale: float, seed: int, one_thread: None) -> None:
    """SGD on least squares: above 2/λ_max it diverges; below 0.02/λ_min, 100 steps shrink the
    slowest error direction by less than e^-2. The suggestion must land between."""
    x, y, lam_min, lam_max = _least_squares(scale, seed)
    sug = _find(x, y, nn.MSELoss(), 1, "sgd", seed)
    assert sug.rule == "valley"
    assert 0.02 / lam_min < sug.lr < 2 / lam_max, (format_lr(sug.lr), 0.02 / lam_min, 2 / lam_max)


def test_the_suggestion_follows_the_curvature(one_thread: None) -> None:
    """Inputs 10x larger make the curvature 100x larger: the suggested LR moves 100x down."""
    small = _find(*_least_squares(1.0)[:2], nn.MSELoss(), 1, "sgd", 0).lr
    large = _find(*_least_squares(10.0)[:2], nn.MSELoss(), 1, "sgd", 0).lr
    assert 30 < small / large < 300


def _final_loss(x: torch.Tensor, y: torch.Tensor, lr: float, steps: int = 100) -> float:
    torch.manual_seed(0)
    model = nn.Linear(x.shape[1], 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    batches = _batches(x, y, 1)
    for _ in range(steps):
        a, b = next(batches)
        loss = nn.functional.cross_entropy(model(a), b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = nn.functional.cross_entropy(model(x), y).item()
    return final if math.isfinite(final) else math.inf


def test_classification_with_adamw_lands_in_the_range_that_trains_well(one_thread: None) -> None:
    """Overlapping Gaussian classes, a linear model, AdamW (what the studio trains heads with).
    The good range is measured: the LRs whose 100 steps at a constant LR end within 5% (of the
    whole possible fall) of the best end."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 8, generator=g)
    y = torch.randint(0, 3, (512,), generator=g)
    x = (centers[y] + torch.randn(512, 8, generator=g)) * 10
    grid = [10 ** (e / 4) for e in range(-24, 3)]
    finals = [_final_loss(x, y, lr) for lr in grid]
    best = min(finals)
    good = [lr for lr, f in zip(grid, finals, strict=True) if f <= best + 0.05 * (finals[0] - best)]
    sug = _find(x, y, nn.CrossEntropyLoss(), 3, "adamw", 0)
    assert min(good) <= sug.lr <= max(good), (format_lr(sug.lr), format_lr(min(good)), format_lr(max(good)))


# -- what the UI does with a result ------------------------------------------------------------------------
def test_applying_a_suggestion_keeps_the_groups_ratios() -> None:
    from tl_core.strategies import config_from_freeze_map, plan_phases

    groups, _ = describe_backbone(TINY_MODEL, 3)
    top = [g.name for g in groups if g.name != HEAD][-2:]
    cfg = tiny_config(Path("."), strategy="fine-tune-top", lr=1e-3)
    before = plan_phases(cfg.resolved(), groups)[-1].lrs
    typed = before | {top[0]: 5e-5}  # the user typed one LR in the freeze map
    final = config_from_freeze_map(cfg, [*top, HEAD], typed, groups)
    applied = lr_finder.apply_suggestion(final, 3e-3, groups)
    after = plan_phases(applied.resolved(), groups)[-1].lrs
    assert after[HEAD] == pytest.approx(3e-3) and applied.lr == 3e-3
    for name in top:
        assert after[name] / after[HEAD] == pytest.approx(typed[name] / typed[HEAD])
    assert set(applied.group_lrs) == {top[0]}  # the freeze map's defaults are not pinned
    assert applied.unfreeze == top and applied.strategy == "fine-tune-top"


def test_result_file_round_trip_and_bad_files(tmp_path: Path) -> None:
    run = Run(tmp_path)
    assert load_result(tmp_path) is None
    lrs = lr_schedule(40)
    curve = Curve(lrs, descent(lrs), smooth(descent(lrs)), "diverged")
    result = lr_finder.LRFindResult(
        "completed",
        curve,
        suggest(lrs, curve.smoothed),
        40,
        "feature-extraction",
        {HEAD: 1.0},
        3e-3,
        True,
        0.5,
    )
    lr_finder.save_result(run, result)
    assert load_result(tmp_path) == result
    (tmp_path / lr_finder.LR_FIND_FILE).write_text('{"status": "completed"}')
    assert load_result(tmp_path) is None


# -- real jobs --------------------------------------------------------------------------------------------
def test_lr_find_job_on_cached_features(tmp_path: Path, color_folders: Path) -> None:
    manager = JobManager(tmp_path / "runs", executor="thread")
    job_id = manager.submit(tiny_config(color_folders), kind="lr-find")
    snap = manager.wait(job_id, timeout=120)
    assert snap.status == "completed", snap.error
    assert snap.kind == "lr-find" and snap.progress == 1.0 and not snap.history
    result = load_result(snap.run_dir)
    assert result is not None and result.feature_cache and result.lr_ratios == {HEAD: 1.0}
    assert 0 < len(result.curve.lrs) <= result.steps_planned
    assert result.suggestion.lr is None or result.suggestion.rule in ("valley", "steepest")
    assert snap.result["suggestion"] == load_result(snap.run_dir).to_dict()["suggestion"]
    summaries = manager.runs().list()
    assert [s.kind for s in summaries] == ["lr-find"] and trained_runs(summaries) == []
    assert not [p for p in Path(snap.run_dir).iterdir() if p.name.startswith(".")]


def test_lr_find_job_fine_tunes_groups_at_their_ratios(tmp_path: Path, color_folders: Path) -> None:
    manager = JobManager(tmp_path / "runs", executor="thread")
    cfg = tiny_config(color_folders, strategy="fine-tune-top", unfreeze_top=2)
    snap = manager.wait(manager.submit(cfg, kind="lr-find"), timeout=120)
    assert snap.status == "completed", snap.error
    result = load_result(snap.run_dir)
    assert not result.feature_cache and result.strategy == "fine-tune-top"
    body = {k: v for k, v in result.lr_ratios.items() if k != HEAD}
    assert len(body) == 2 and all(0 < v < 1 for v in body.values())
    assert result.lr_ratios[HEAD] == 1.0
    assert result.curve.ended in ("diverged", "end of range")


def test_lr_find_job_ends_at_the_rooms_time_limit(tmp_path: Path, color_folders: Path) -> None:
    manager = JobManager(tmp_path / "runs", executor="thread", time_limit_s=0.001)
    cfg = tiny_config(color_folders, strategy="fine-tune-top", unfreeze_top=2)
    snap = manager.wait(manager.submit(cfg, kind="lr-find"), timeout=120)
    assert snap.status == "stopped", snap.error
    result = load_result(snap.run_dir)
    assert result is None or (result.curve.ended == "stopped" and len(result.curve.lrs) <= 1)


class _StopAfter:
    """A job's reporter that presses Stop once the range test has taken ``steps`` steps."""

    def __init__(self, steps: int):
        self.steps = steps
        self.stop = threading.Event()
        self.fields: list[dict[str, Any]] = []

    def update(self, **fields: Any) -> None:
        self.fields.append(fields)
        if fields.get("stage") == lr_finder.STAGE and fields.get("stage_done", 0) >= self.steps:
            self.stop.set()

    def history(self, record: dict[str, Any]) -> None:
        raise AssertionError("a range test has no epochs")


def test_stopping_mid_test_keeps_the_partial_curve(tmp_path: Path, color_folders: Path) -> None:
    from tl_core.runner import JobSpec, _prepare

    cfg = tiny_config(color_folders, strategy="fine-tune-all")
    run = Run(tmp_path / "run")
    run.dir.mkdir()
    reporter = _StopAfter(1)
    prep = _prepare(JobSpec("j", cfg.to_dict(), str(run.dir), "cpu"), reporter, run)
    result = lr_finder.run_lr_finder(prep, reporter, run)
    assert result.status == "stopped" and result.curve.ended == "stopped"
    # The first step reports at once; Stop is then honoured before the next batch.
    assert len(result.curve.lrs) == 1
    assert result.suggestion.lr is None and "Stopped after 1 of" in result.suggestion.reason
    assert load_result(run.dir) == result


def test_the_chart_marks_the_suggestion_the_valley_and_the_current_lr() -> None:
    from tl_core.charts import lr_finder_curve

    lrs = lr_schedule(100)
    losses = descent(lrs)
    sug = suggest(lrs, smooth(losses))
    span = (lrs[sug.span[0]], lrs[sug.span[1]])
    fig = lr_finder_curve(lrs, losses, smooth(losses), (sug.lr, smooth(losses)[sug.index]), span, 3e-3)
    assert fig.layout.xaxis.type == "log"
    marker = next(t for t in fig.data if t.name == "suggested")
    assert marker.x == (sug.lr,) and marker.text == (f"suggested {format_lr(sug.lr)}",)
    shapes = {s.type: s for s in fig.layout.shapes}
    assert (shapes["rect"].x0, shapes["rect"].x1) == span and shapes["line"].x0 == 3e-3
    assert fig.layout.annotations[0].x == pytest.approx(math.log10(3e-3))  # log axes take log10
    assert fig.layout.yaxis.range[1] < 4  # the blow-up doesn't squash the curve


def test_progress_counts_feature_caching_then_the_steps(tmp_path: Path, color_folders: Path) -> None:
    from tl_core.runner import JobSpec, _prepare

    cfg = tiny_config(color_folders)
    run = Run(tmp_path / "run")
    run.dir.mkdir()
    reporter = _StopAfter(10**6)  # never stops
    prep = _prepare(JobSpec("j", cfg.to_dict(), str(run.dir), "cpu"), reporter, run)
    result = lr_finder.run_lr_finder(prep, reporter, run)
    assert result.status == "completed" and result.feature_cache
    progress = [f["progress"] for f in reporter.fields if "progress" in f]
    assert progress == sorted(progress) and progress[-1] > 0.95
    stages = [f for f in reporter.fields if f.get("stage") == lr_finder.STAGE and "progress" in f]
    assert stages and stages[0]["stage_done"] == 1 and stages[0]["progress"] > 0.9  # caching was the work


def test_a_changed_freeze_map_makes_the_result_stale() -> None:
    from tl_core.strategies import config_from_freeze_map

    groups, _ = describe_backbone(TINY_MODEL, 3)
    cfg = tiny_config(Path("."))
    lrs = lr_schedule(40)
    result = lr_finder.LRFindResult(
        "completed",
        Curve(lrs),
        suggest(lrs, descent(lrs)),
        40,
        "feature-extraction",
        {HEAD: 1.0},
        3e-3,
        True,
        1.0,
    )
    assert not lr_finder.trainable_changed(result, cfg, groups)
    top = groups[-2].name
    tuned = config_from_freeze_map(cfg, [top, HEAD], {top: 1e-4, HEAD: 1e-3}, groups)
    assert lr_finder.trainable_changed(result, tuned, groups)


def test_progress_text() -> None:
    from tl_core.jobs import JobStatus

    snap = JobStatus("j", "r", "d", status="queued", queue_position=2)
    assert lr_finder.progress_text(snap) == (
        "Waiting for the machine (number 2 in the queue); the test starts automatically."
    )
    snap = JobStatus("j", "r", "d", status="running", stage=lr_finder.STAGE, stage_done=7, stage_total=40)
    assert lr_finder.progress_text(snap) == "running: testing learning rates, step 7 of 40"
    snap = JobStatus(
        "j", "r", "d", status="running", stage="caching train features", stage_done=3, stage_total=9
    )
    assert lr_finder.progress_text(snap) == "running: caching train features 3/9"
