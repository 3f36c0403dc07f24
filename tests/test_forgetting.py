"""The forgetting meter: the original ImageNet classifier read before and after training."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_MODEL, cpu_trainer, finished, make_class_folders, tiny_config, train_job
from tl_core import forgetting as F
from tl_core.backbones import create_backbone, get_spec, imagenet_classifier
from tl_core.runs import Run, RunStore
from tl_core.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
CATS = {"tabby", "tiger cat", "Egyptian cat"}


def save_tiny_weights(path: Path, num_classes: int) -> Path:
    """A tiny model's state dict, standing in for a pretrained checkpoint with that head."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(TINY_MODEL, num_classes=num_classes)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny-in1k.safetensors", 1000)


def make_trainer(data: Path, meter_run: Run, **kw) -> tuple[Trainer, F.ForgettingMeter]:
    return cpu_trainer(data, lambda info: F.ForgettingMeter(meter_run, info), **kw)


# ---- the meter ------------------------------------------------------------------------------------


def test_nothing_trained_keeps_100_percent_and_the_probe_changes_nothing(
    color_folders: Path, imagenet_file: Path, tmp_path: Path
) -> None:
    run = RunStore(tmp_path / "runs").create({})
    trainer, meter = make_trainer(
        color_folders, run, weights=f"file:{imagenet_file}", strategy="fine-tune-all"
    )
    trainer.model.train()
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    meter.on_train_start(trainer)
    meter.on_fit_end(trainer, finished())
    # Eval mode while probing: batch-norm statistics did not drift, and training mode is back.
    assert all(torch.equal(state[k], v) for k, v in trainer.model.state_dict().items())
    assert trainer.model.training
    report = F.load_report(run)
    assert report is not None and not (run.dir / F.ERROR_LOG).exists()
    assert report.kept == 1.0 and report.kept_as_saved is None and not report.by_construction
    n_val = len(trainer.dataset.items["val"])
    assert report.n_probe == len(F.SAMPLE_PHOTOS) + n_val == len(report.rows)
    assert [r.source for r in report.rows] == [F.SAMPLE] * len(F.SAMPLE_PHOTOS) + [F.YOURS] * n_val
    assert report.rows[0].image == "cat" and report.rows[-1].image.count("/") == 1  # class/file
    assert all(not r.changed and r.before_p == r.after_p for r in report.rows)


def test_head_only_training_through_the_runner_keeps_100_percent(
    color_folders: Path, imagenet_file: Path, tmp_path: Path
) -> None:
    """The runner wires the meter in; a job that trains only the head leaves ImageNet alone."""
    cfg = tiny_config(
        color_folders, weights=f"file:{imagenet_file}", strategy="fine-tune-top", unfreeze=[], epochs=2
    )
    run = train_job(cfg, tmp_path / "runs")
    report = F.load_report(run)
    assert report is not None and report.kept == 1.0 and report.n_probe > len(F.SAMPLE_PHOTOS)


def test_a_huge_learning_rate_destroys_imagenet_knowledge(tmp_path: Path) -> None:
    """The real EfficientNet-Lite0: sensible ImageNet answers before, mostly different after."""
    data = make_class_folders(tmp_path / "colors", {"red": 6, "green": 6})
    run = RunStore(tmp_path / "runs").create({})
    trainer, _ = make_trainer(
        data,
        run,
        backbone="efficientnet_lite0",
        catalog_only=True,
        weights="bundled",
        strategy="fine-tune-all",
        lr=0.5,
        backbone_lr_scale=1.0,
        lr_decay=1.0,
        epochs=1,
        warmup_epochs=0,
        patience=None,
    )
    trainer.fit()
    report = F.load_report(run)
    assert report is not None, (run.dir / F.ERROR_LOG).read_text()
    before = {r.image: r.before for r in report.rows}
    assert before["cat"] in CATS and before["coffee"] in {"espresso", "cup", "coffee mug"}
    assert before["cameraman"] == "tripod"
    assert report.kept < 0.5 and report.kept_as_saved is not None
    assert sum(r.changed for r in report.rows) == round((1 - report.kept) * report.n_probe)


def test_feature_extraction_keeps_100_percent_by_construction(
    color_folders: Path, imagenet_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_measuring(*args, **kwargs):
        raise AssertionError("feature extraction must not spend time measuring")

    monkeypatch.setattr(F, "imagenet_top1", no_measuring)
    run = train_job(tiny_config(color_folders, weights=f"file:{imagenet_file}", epochs=2), tmp_path / "runs")
    report = F.load_report(run)
    assert report == F.ForgettingReport(kept=1.0, n_probe=0, by_construction=True, rows=[])
    assert "by construction" in F.summary(report)


def test_no_report_without_an_imagenet_classifier(color_folders: Path, tmp_path: Path) -> None:
    scratch = train_job(tiny_config(color_folders, epochs=1), tmp_path / "runs")
    assert F.load_report(scratch) is None
    assert "random weights" in F.missing_reason(scratch)
    ten = save_tiny_weights(tmp_path / "ten-classes.safetensors", 10)
    other = train_job(
        tiny_config(color_folders, weights=f"file:{ten}", strategy="fine-tune-all", epochs=1),
        tmp_path / "runs",
    )
    assert F.load_report(other) is None and not (other.dir / F.ERROR_LOG).exists()
    assert "no 1000-class ImageNet classifier" in F.missing_reason(other)


def test_a_failing_meter_never_fails_the_run(
    color_folders: Path, imagenet_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("probe exploded")

    monkeypatch.setattr(F, "imagenet_top1", broken)
    cfg = tiny_config(color_folders, weights=f"file:{imagenet_file}", strategy="fine-tune-all", epochs=1)
    run = train_job(cfg, tmp_path / "runs")
    assert run.weights_path.exists() and F.load_report(run) is None
    assert "probe exploded" in (run.dir / F.ERROR_LOG).read_text()
    assert "forgetting meter failed" in F.missing_reason(run)


def test_batchnorm_statistics_are_swapped_back_exactly() -> None:
    model, _ = create_backbone(TINY_MODEL, 3, "none", catalog_only=False)
    pretrained = F.batchnorm_statistics(model)
    trained = {k: v + 1.0 for k, v in pretrained.items()}
    with F.swapped_buffers(model, trained):
        pass
    buffers = dict(model.named_buffers())
    assert all(torch.equal(buffers[k], pretrained[k]) for k in pretrained)
    with F.swapped_buffers(model, trained):
        assert all(torch.equal(buffers[k], trained[k]) for k in trained)


# ---- the weights' own classifier ----------------------------------------------------------------


def test_the_bundled_lite0_weights_carry_the_imagenet_classifier() -> None:
    model, info = create_backbone("efficientnet_lite0", 4, "bundled")
    weight, bias = imagenet_classifier(model, info.name, "bundled")
    assert weight.shape == (1000, model.num_features) and bias.shape == (1000,)
    assert model.get_classifier().out_features == 4  # the run's own head is untouched
    assert imagenet_classifier(model, info.name, "none") is None


def test_imagenet_names_are_short_and_offline() -> None:
    assert F.imagenet_label(281) == "tabby" and F.imagenet_label(967) == "espresso"


def test_probe_uses_the_models_native_input_size() -> None:
    model, info = create_backbone("efficientnet_lite0", 4, "bundled", image_size=64)
    assert F.probe_data_config(info.data_config, model)["input_size"] == (3, 224, 224)
    assert get_spec("efficientnet_lite0").input_size == 224
    vit = torch.nn.Module()  # ViTs fix their patch grid: they keep the size they were built for
    vit.pretrained_cfg = {"input_size": (3, 224, 224), "fixed_input_size": True}
    assert F.probe_data_config({"input_size": (3, 160, 160)}, vit)["input_size"] == (3, 160, 160)


# ---- the probe set and the report -----------------------------------------------------------------


def test_probe_set_is_the_photos_and_an_even_spread_of_validation_images() -> None:
    assert all((F.PHOTOS_DIR / f"{p.name}.jpg").is_file() for p in F.SAMPLE_PHOTOS)
    val = [(f"/data/{c}/{i:03d}.png", c) for c in range(10) for i in range(30)]
    probe = F.probe_images(val)
    yours = [p for p in probe if p.source == F.YOURS]
    assert len(probe) == len(F.SAMPLE_PHOTOS) + F.MAX_USER_IMAGES and len(yours) == F.MAX_USER_IMAGES
    assert {p.name.split("/")[0] for p in yours} == {str(c) for c in range(10)}  # every class
    assert len(F.probe_images(val[:5])) == len(F.SAMPLE_PHOTOS) + 5


def test_shipped_photos_are_scikit_images_own(tmp_path: Path) -> None:
    """The files in the package are what ``write_sample_photos`` writes (give or take JPEG)."""
    pytest.importorskip("skimage", reason="scikit-image (a test extra) is not installed")
    import numpy as np
    from PIL import Image

    for path in F.write_sample_photos(tmp_path):
        fresh = np.asarray(Image.open(path), dtype=np.float32)
        shipped = np.asarray(Image.open(F.PHOTOS_DIR / path.name), dtype=np.float32)
        assert fresh.shape == shipped.shape and np.abs(fresh - shipped).mean() < 2.0


def sample_report() -> F.ForgettingReport:
    rows = [
        F.ProbeRow("cat", F.SAMPLE, "tabby", 0.43, "tabby", 0.4),
        F.ProbeRow("coffee", F.SAMPLE, "espresso", 0.87, "bucket", 0.02),
        F.ProbeRow("3/0042.png", F.YOURS, "nematode", 0.14, "swab", 0.01),
    ]
    return F.ForgettingReport(kept=1 / 3, n_probe=3, by_construction=False, rows=rows, kept_as_saved=0.0)


def test_report_round_trips_through_json(tmp_path: Path) -> None:
    run = Run(tmp_path / "run")
    assert F.load_report(run) is None
    report = sample_report()
    F.save_report(run, report)
    assert F.load_report(run) == report
    assert not [p for p in run.dir.iterdir() if p.name.startswith(".")]  # atomic: no temp file left
    (run.dir / F.REPORT_FILE).write_text('{"kept": "lots"')
    assert F.load_report(run) is None
    (run.dir / F.REPORT_FILE).write_text('{"rows": []}')
    assert F.load_report(run) is None


def test_summary_and_table_put_what_changed_first(tmp_path: Path) -> None:
    report = sample_report()
    text = F.summary(report)
    assert "1 of 3 probe images (2 sample photos, 1 of your validation images)" in text
    assert "Catastrophic forgetting" in text and "batch-norm statistics" in text
    frame = F.report_frame(report)
    assert list(frame["name"]) == ["coffee", "3/0042.png", "cat"]
    assert list(frame["before"])[0] == "espresso (87%)" and list(frame["after"])[0] == "bucket (2%)"
    assert list(frame["class"]) == ["changed", "changed", "kept"]
    # With the run, sample photos and the user's images get thumbnails from their files.
    run = Run(tmp_path / "run")
    image = make_class_folders(tmp_path / "data", {"red": 1}) / "red" / "red_000.png"
    run.write_json("split.json", {"train": [], "val": [[str(image), 0]]})
    report.rows[2] = F.ProbeRow("red/red_000.png", F.YOURS, "nematode", 0.14, "swab", 0.01)
    frame = F.report_frame(report, run)
    assert all(uri.startswith("data:image/jpeg;base64,") for uri in frame["image"])


# ---- the Results page --------------------------------------------------------------------------------


def results_page_run(studio_home: Path, report: F.ForgettingReport | None, **config) -> Run:
    from tl_core.config import TrainConfig
    from tl_core.evaluation import predictions_frame, save_predictions
    from tl_core.workspaces import SOLO, WorkspaceStore

    run = WorkspaceStore().runs(SOLO).create(TrainConfig(data="digits", **config).to_dict())
    run.write_status("completed", best_val_acc=0.9, epochs_run=1)
    record = {
        "epoch": 1,
        "phase": "head",
        "train_loss": 0.5,
        "val_loss": 0.4,
        "train_acc": 0.8,
        "val_acc": 0.9,
    }
    run.append_metrics(record)
    run.write_json("labels.json", ["ants", "bees"])
    items = [("a.png", 0), ("b.png", 1)]
    save_predictions(run, predictions_frame(items, [[0.9, 0.1], [0.2, 0.8]], ["ants", "bees"]))
    if report is not None:
        F.save_report(run, report)
    return run


def results_page(run: Run):
    from streamlit.testing.v1 import AppTest

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["run"] = run.id
    at.run()
    at.switch_page("pages/results.py")
    at.run()
    assert not at.exception, at.exception
    return at


def test_results_page_shows_the_meter(studio_home: Path) -> None:
    report = sample_report()
    at = results_page(results_page_run(studio_home, report, strategy="fine-tune-all"))
    kept = next(m for m in at.metric if m.label == "ImageNet knowledge kept")
    assert kept.value == "33%" and "Catastrophic forgetting" in kept.help
    table = next(df.value for df in at.dataframe if {"before", "after"} <= set(df.value.columns))
    assert list(table["name"]) == ["coffee", "3/0042.png", "cat"]


def test_results_page_says_why_there_is_no_meter(studio_home: Path) -> None:
    at = results_page(results_page_run(studio_home, None, strategy="from-scratch"))
    assert not any(m.label == "ImageNet knowledge kept" for m in at.metric)
    assert any("random weights" in i.value for i in at.info)
    at = results_page(results_page_run(studio_home, F.by_construction()))
    assert next(m for m in at.metric if m.label == "ImageNet knowledge kept").value == "100%"
    assert any("by construction" in md.value for md in at.markdown)


def test_a_fine_tune_of_the_top_probes_from_the_frozen_bottoms_maps(
    color_folders: Path, imagenet_file: Path, tmp_path: Path
) -> None:
    """Fine-tune-top without augmentation runs the probe's frozen bottom once, and reading
    ImageNet answers from those maps gives what the whole network gives."""
    from tl_core.training import inputs

    run = RunStore(tmp_path / "runs").create({})
    trainer, meter = make_trainer(
        color_folders, run, weights=f"file:{imagenet_file}", strategy="fine-tune-top", unfreeze_top=1
    )
    trainer.inputs = inputs.choose(trainer)
    assert trainer.inputs is not None and trainer.inputs.kind == "maps"
    meter.on_train_start(trainer)
    assert meter.probe is not None and meter.probe.maps is not None and meter.suffix is not None
    assert len(meter.probe.maps) == len(meter.probe.images)
    full = F.imagenet_top1(trainer.model, meter.head, meter.probe)
    from_maps = F.imagenet_top1(trainer.model, meter.head, meter.probe, suffix=meter.suffix)
    assert full is not None and from_maps is not None
    assert {k: v[0] for k, v in full.items()} == {k: v[0] for k, v in from_maps.items()}
    assert [v[1] for v in full.values()] == pytest.approx([v[1] for v in from_maps.values()], abs=1e-5)
