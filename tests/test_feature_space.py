"""Feature snapshots before and after training, their file, and the PCA picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cpu_trainer, finished, tiny_config, train_job
from tl_core import feature_space as FS
from tl_core.runs import Run, RunStore
from tl_core.training import Trainer


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions gain nothing from a second thread, and on a busy 2-core machine
    OpenMP's spin-waiting made them ~20x slower (see tests/test_gradcam.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts backbone passes over the validation images made for the snapshots."""
    calls: list[int] = []
    real = FS.pooled_features

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(FS, "pooled_features", counting)
    return calls


def test_fine_tuning_saves_pretrained_and_trained_features(
    color_folders: Path, tmp_path: Path, counted: list[int]
) -> None:
    cfg = tiny_config(color_folders, strategy="fine-tune-all", epochs=2, warmup_epochs=0, lr=0.05)
    run = train_job(cfg, tmp_path / "runs")
    snaps = FS.load_snapshots(run)
    assert snaps is not None and len(counted) == 2  # one pass before, one after
    val = run.read_json("split.json")["val"]
    assert snaps.paths == [p for p, _ in val] and list(snaps.labels) == [y for _, y in val]
    assert snaps.classes == run.read_json("labels.json")
    assert snaps.start == "random" and not snaps.unchanged  # the tiny model has no pretrained weights
    assert snaps.before.shape == snaps.after.shape and snaps.before.shape[0] == len(val)
    assert not np.allclose(snaps.before, snaps.after, atol=1e-3)  # training moved the features
    titles = [v.title for v in FS.views(snaps)]
    assert titles == ["Before training: random weights", "After training"]
    # "After" is the saved model (FeatureSnapshots runs after BestWeights restored it).
    import timm
    from safetensors.torch import load_file

    model = timm.create_model(cfg.backbone, num_classes=3)
    model.load_state_dict(load_file(str(run.weights_path)))
    saved, _ = FS.pooled_features(model, [tuple(i) for i in val], run.read_json("data_config.json"))
    assert np.allclose(snaps.after, saved.astype(np.float16).astype(np.float32), atol=1e-3, rtol=1e-2)


def test_feature_extraction_reuses_the_cached_features(
    color_folders: Path, tmp_path: Path, counted: list[int]
) -> None:
    cfg = tiny_config(color_folders, strategy="feature-extraction", epochs=2)
    run = train_job(cfg, tmp_path / "runs")
    snaps = FS.load_snapshots(run)
    assert snaps is not None and snaps.unchanged and not counted  # no backbone pass at all
    assert snaps.before is snaps.after
    assert len(FS.views(snaps)) == 1


def make_trainer(data: Path, run: Run, **kw) -> tuple[Trainer, FS.FeatureSnapshots]:
    return cpu_trainer(data, lambda info: FS.FeatureSnapshots(run, max_points=4), **kw)


def test_a_snapshot_of_at_most_max_points_spread_over_every_class(
    color_folders: Path, tmp_path: Path
) -> None:
    run = RunStore(tmp_path / "runs").create({})
    trainer, snapshots = make_trainer(color_folders, run, strategy="fine-tune-all", epochs=1)
    snapshots.on_train_start(trainer)
    snapshots.on_fit_end(trainer, finished())
    snaps = FS.load_snapshots(run)
    assert snaps is not None and len(snaps.paths) == 4
    assert set(snaps.labels.tolist()) == {0, 1, 2}  # the split is ordered by class


def test_nothing_is_saved_when_no_epoch_finished(color_folders: Path, tmp_path: Path) -> None:
    run = RunStore(tmp_path / "runs").create({})
    trainer, snapshots = make_trainer(color_folders, run, strategy="fine-tune-all", epochs=1)
    snapshots.on_train_start(trainer)
    snapshots.on_fit_end(trainer, finished(epochs_run=0))
    assert not (run.dir / FS.FEATURES_FILE).exists()


def test_a_failing_snapshot_never_fails_the_run(
    color_folders: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(FS, "pooled_features", broken)
    run = train_job(tiny_config(color_folders, strategy="fine-tune-all", epochs=1), tmp_path / "runs")
    assert run.weights_path.exists() and FS.load_snapshots(run) is None
    assert "boom" in (run.dir / FS.ERROR_LOG).read_text()
    assert "failed" in FS.missing_reason(run)


def test_backbone_fixed_is_read_from_the_plan(color_folders: Path, tmp_path: Path) -> None:
    run = RunStore(tmp_path / "runs").create({})
    expected = {
        ("feature-extraction", False): True,
        ("feature-extraction", True): False,  # batch-norm statistics move
        ("fine-tune-top", False): False,
        ("from-scratch", False): False,
    }
    for (strategy, train_bn), fixed in expected.items():
        trainer, _ = make_trainer(color_folders, run, strategy=strategy, train_bn=train_bn, epochs=2)
        assert FS.backbone_fixed(trainer) is fixed, strategy


# ---- the file and the picture ----------------------------------------------------------------------


def two_clouds(n: int = 40, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    centres = np.where(labels[:, None] == 0, 5.0, -5.0) * np.eye(dim)[0]
    return (centres + rng.normal(0, 1, (n, dim))).astype(np.float32), labels


def snapshots(unchanged: bool = False, start: str = "pretrained") -> FS.Snapshots:
    x, y = two_clouds()
    return FS.Snapshots(
        before=x if unchanged else x[::-1].copy(),
        after=x,
        labels=y,
        paths=[f"/data/{'ab'[k]}/{i}.png" for i, k in enumerate(y)],
        classes=["a", "b"],
        start=start,
        unchanged=unchanged,
    )


def test_snapshots_round_trip_and_unchanged_ones_are_stored_once(tmp_path: Path) -> None:
    from safetensors import safe_open

    for unchanged in (False, True):
        run = RunStore(tmp_path / f"runs{unchanged}").create({})
        FS.save_snapshots(run, snapshots(unchanged))
        back = FS.load_snapshots(run)
        assert back is not None and back.unchanged is unchanged
        assert np.allclose(back.after, snapshots(unchanged).after, atol=1e-2)
        assert np.allclose(back.before, snapshots(unchanged).before, atol=1e-2)
        assert back.paths[0] == "/data/a/0.png" and back.classes == ["a", "b"]
        with safe_open(str(run.dir / FS.FEATURES_FILE), framework="numpy") as fh:
            keys = list(fh.keys())
        assert ("before" in keys) is not unchanged


def test_a_damaged_file_reads_as_no_snapshot(tmp_path: Path) -> None:
    run = RunStore(tmp_path / "runs").create({})
    (run.dir / FS.FEATURES_FILE).write_bytes(b"not safetensors")
    assert FS.load_snapshots(run) is None
    assert "before the feature space view existed" in FS.missing_reason(run)


def test_pca_frame_puts_separate_classes_apart() -> None:
    x, y = two_clouds()
    paths = [f"/data/{'ab'[k]}/{i}.png" for i, k in enumerate(y)]
    frame, (pc1, pc2) = FS.pca_frame(x, y, ["a", "b"], paths)
    assert list(frame.columns) == ["x", "y", "class", "file", "path"]
    assert frame["file"][0] == "a/0.png" and frame["class"][1] == "b"
    assert pc1 > 0.5 and 0 < pc2 < pc1 and pc1 + pc2 <= 1
    a, b = frame[frame["class"] == "a"]["x"], frame[frame["class"] == "b"]["x"]
    assert a.max() < b.min() or b.max() < a.min()  # the first direction splits the clouds


def test_pca_frame_of_tiny_sets_does_not_crash() -> None:
    frame, explained = FS.pca_frame(np.ones((1, 5), np.float32), np.array([0]), ["a"], ["/x/a/1.png"])
    assert len(frame) == 1 and explained == (0.0, 0.0) and (frame[["x", "y"]] == 0).all().all()
    frame, explained = FS.pca_frame(np.eye(3, 1, dtype=np.float32), np.zeros(3, int), ["a"], ["p"] * 3)
    assert explained == (1.0, 0.0) and (frame["y"] == 0).all()  # one feature: a line, not a crash


def test_neighbour_agreement_tells_clouds_from_noise() -> None:
    x, y = two_clouds()
    assert FS.neighbour_agreement(x, y) == 1.0
    rng = np.random.default_rng(1)
    noise = FS.neighbour_agreement(rng.normal(size=(200, 16)), rng.integers(0, 2, 200))
    assert noise is not None and 0.3 < noise < 0.7
    assert FS.neighbour_agreement(x[:1], y[:1]) is None


def test_readings_say_what_the_pictures_show() -> None:
    assert "already separate your classes" in FS.reading(snapshots(unchanged=True), [0.95])
    assert "partly" in FS.reading(snapshots(unchanged=True), [0.5])
    assert "Random weights group little" in FS.reading(snapshots(start="random"), [0.4, 0.9])
    assert "Even with random weights" in FS.reading(snapshots(start="random"), [0.9, 1.0])
    assert "moved the backbone's features towards" in FS.reading(snapshots(), [0.7, 0.95])
    assert "loosened" in FS.reading(snapshots(), [0.71, 0.42])
    assert "changed the grouping little" in FS.reading(snapshots(), [0.74, 0.75])
    assert [v.title for v in FS.views(snapshots())] == [
        "Before training: pretrained features",
        "After fine-tuning",
    ]


def test_spread_keeps_order_and_bounds() -> None:
    assert FS.spread(10, 4) == [0, 2, 5, 7]
    assert FS.spread(3, 500) == [0, 1, 2]
    assert FS.spread(0) == []


def test_pooled_features_leave_the_model_as_found(color_folders: Path) -> None:
    import timm

    model = timm.create_model("test_efficientnet", num_classes=3).train()
    items = [(str(p), 0) for p in sorted((color_folders / "red").iterdir())[:3]] + [("/missing.png", 1)]
    cfg = dict(timm.data.resolve_model_data_config(model)) | {"input_size": (3, 32, 32)}
    feats, kept = FS.pooled_features(model, items, cfg)
    assert model.training and kept == [0, 1, 2]  # the unreadable file is left out
    assert feats.shape == (3, model.num_features) and np.isfinite(feats).all()
    assert FS.pooled_features(model, items, cfg, on_batch=lambda done, total: True) is None
    assert torch.is_grad_enabled()
