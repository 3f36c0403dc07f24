"""Engine pieces the pages rely on: uploads, thumbnails, freeze map, estimates, charts."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm

from tl_core.advisor import LADDER
from tl_core.archive import save_files, save_upload
from tl_core.backbones import get_spec
from tl_core.charts import class_counts, confusion_matrix, freeze_map, ladder, training_curves
from tl_core.config import TrainConfig
from tl_core.data import scan_dataset, thumbnails
from tl_core.errors import DatasetError
from tl_core.estimates import estimate_epoch
from tl_core.freezing import HEAD, freeze_rows, layer_groups
from tl_core.strategies import config_from_freeze_map, default_trainable

GROUPS = layer_groups(timm.create_model("test_resnet", num_classes=3))


def test_folder_upload_is_saved_and_scannable(tmp_path: Path, color_folders: Path) -> None:
    files = [(f"mine/{p.relative_to(color_folders)}", p.read_bytes()) for p in color_folders.rglob("*.*")]
    folder = save_files(files, tmp_path / "uploads")
    assert save_files(files, tmp_path / "uploads") == folder  # same content, same folder
    ds = scan_dataset(folder)
    assert ds.classes == ["blue", "green", "red"]


@pytest.mark.parametrize("bad", ["../x.png", "/abs/x.png", "a/../../x.png"])
def test_folder_upload_refuses_path_tricks(tmp_path: Path, bad: str) -> None:
    with pytest.raises(DatasetError, match="Refused"):
        save_files([("ok/a.png", b"1"), (bad, b"2")], tmp_path / "uploads")
    assert not any((tmp_path / "uploads").rglob("*.png")) if (tmp_path / "uploads").exists() else True


def test_zip_upload_is_content_addressed(tmp_path: Path) -> None:
    a = save_upload("../../data.zip", b"PK-one", tmp_path)
    b = save_upload("data.zip", b"PK-two", tmp_path)
    assert a.parent == tmp_path and a.name.endswith("-data.zip") and a != b


def test_thumbnails_enlarge_tiny_images(studio_home: Path) -> None:
    thumbs = thumbnails(scan_dataset("digits"), per_class=2, size=96)
    assert list(thumbs) == [str(i) for i in range(10)]
    name, img = thumbs["3"][0]
    assert img.size == (96, 96) and name.endswith(".png")


def test_freeze_map_to_config() -> None:
    cfg = TrainConfig(strategy="fine-tune-top", epochs=5)
    assert config_from_freeze_map(cfg, [HEAD], {HEAD: 2e-3}, GROUPS).strategy == "feature-extraction"
    picked = config_from_freeze_map(cfg, [HEAD, "stage 2", "stage 4"], {HEAD: 1e-3, "stage 2": 1e-5}, GROUPS)
    assert picked.strategy == "fine-tune-top" and picked.unfreeze == ["stage 2", "stage 4"]
    assert picked.group_lrs["stage 2"] == 1e-5
    everything = [g.name for g in GROUPS]
    full = config_from_freeze_map(TrainConfig(strategy="fine-tune-all"), everything, {}, GROUPS)
    assert full.strategy == "fine-tune-all"
    partial = config_from_freeze_map(TrainConfig(strategy="fine-tune-all"), [HEAD, "stage 4"], {}, GROUPS)
    assert partial.strategy == "fine-tune-top"


def test_default_ticks_follow_the_strategy() -> None:
    assert default_trainable(TrainConfig(), GROUPS) == [HEAD]
    assert set(default_trainable(TrainConfig(strategy="fine-tune-top", unfreeze_top=1), GROUPS)) == {
        HEAD,
        "stage 4",
    }


def test_freeze_rows_count_without_a_model() -> None:
    rows = freeze_rows({"stem": 10, "stage 1": 100, HEAD: 5}, [HEAD, "stage 1"])
    assert [(r.name, r.trainable, r.frozen) for r in rows] == [
        ("stem", 0, True),
        ("stage 1", 100, False),
        (HEAD, 5, False),
    ]


def test_estimates_scale_with_compute() -> None:
    lite, big = get_spec("efficientnet_lite0"), get_spec("convnext_tiny")
    cached = estimate_epoch(lite, 800, 200, None, "feature-extraction", True, rate=10.0)
    assert cached.first_epoch_s == pytest.approx(0.4 * 1000 / 10) and cached.later_epoch_s < 1
    ft = estimate_epoch(lite, 800, 200, None, "fine-tune-all", False, rate=10.0)
    assert ft.later_epoch_s == pytest.approx(0.4 * (800 * 3 + 200) / 10)
    assert (
        estimate_epoch(big, 800, 200, None, "fine-tune-all", False, 10.0).later_epoch_s
        > 10 * ft.later_epoch_s
    )
    half = estimate_epoch(lite, 800, 200, 112, "fine-tune-all", False, rate=10.0)
    assert half.later_epoch_s == pytest.approx(ft.later_epoch_s / 4)
    # A frozen bottom runs once: the first epoch pays for it, later ones only for the top.
    top = estimate_epoch(lite, 800, 200, None, "fine-tune-top", False, rate=10.0, frozen=0.6, once=True)
    assert top.later_epoch_s == pytest.approx(0.4 * ft.later_epoch_s)
    assert top.first_epoch_s == pytest.approx(top.later_epoch_s + 0.6 * 0.4 * 1000 / 10)
    # Augmented: the bottom runs every epoch, but no gradient flows through it.
    aug = estimate_epoch(lite, 800, 200, None, "fine-tune-top", False, rate=10.0, frozen=0.6)
    assert aug.first_epoch_s == aug.later_epoch_s == pytest.approx(0.4 * (800 * (1 + 2 * 0.4) + 200) / 10)


def test_the_frozen_share_is_what_never_trains_and_runs_once_without_augmentation() -> None:
    from tl_core.config import TrainConfig
    from tl_core.estimates import frozen_share, runs_once

    top = TrainConfig(strategy="fine-tune-top", augment="none")
    share = frozen_share("efficientnet_lite0", 224, top)
    assert 0.5 < share < 0.8  # the top two of seven stages are the cheap, low-resolution end
    assert frozen_share("efficientnet_lite0", 224, TrainConfig(strategy="gradual", augment="none")) < share
    light = TrainConfig(strategy="fine-tune-top", augment="light")
    assert frozen_share("efficientnet_lite0", 224, light) == share  # no gradient there either way
    assert runs_once(top) and not runs_once(light)
    assert frozen_share("efficientnet_lite0", 224, TrainConfig(strategy="fine-tune-all", augment="none")) == 0
    assert frozen_share("vit_small_patch16_224", 224, top) == 0  # not a chain of modules
    assert frozen_share("vit_small_patch16_224", 128, top) == 0  # a ViT at another size: no error
    # A freeze map names one backbone's groups; another backbone's row uses its own top groups.
    lite_map = TrainConfig(strategy="fine-tune-top", augment="none", unfreeze=["stage 6", "stage 7"])
    resnet = lite_map.for_backbone("resnet50")
    assert (
        resnet.unfreeze is None
        and resnet.unfreeze_top == 2
        and lite_map.for_backbone(lite_map.backbone) is lite_map
    )
    assert 0.3 < frozen_share("resnet50", 224, resnet) < 0.6


def test_chart_builders() -> None:
    hist = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_acc": 0.5, "val_acc": 0.4}
        for e in (1, 2, 3)
    ]
    fig = training_curves(hist)
    assert len(fig.data) == 4 and list(fig.data[0].x) == [1, 2, 3]
    assert len(class_counts({"train": {"a": 3, "b": 4}, "val": {"a": 1, "b": 1}}).data) == 2
    cm = confusion_matrix([[2, 1], [0, 3]], ["a", "b"])
    assert cm.data[0].type == "heatmap"
    lad = ladder(LADDER, 1)
    assert lad.data[0].marker.color[1] != lad.data[0].marker.color[0]
    fm = freeze_map(freeze_rows({"stem": 10, HEAD: 5}, [HEAD]))
    assert [t.name for t in fm.data] == ["trainable", "frozen"]
