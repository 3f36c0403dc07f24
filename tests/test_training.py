from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_MODEL, make_class_folders, tiny_config
from tl_core.backbones import create_backbone
from tl_core.data import scan_dataset
from tl_core.devices import detect_device
from tl_core.errors import TrainingFailed
from tl_core.freezing import layer_groups
from tl_core.training import (
    BestWeights,
    Callback,
    EarlyStopping,
    StopOnEvent,
    Trainer,
    TrainingDiverged,
    class_weights,
    seed_everything,
)


def make_trainer(data: Path, callbacks=(), **kw) -> Trainer:
    cfg = tiny_config(data, **({"batch_size": 8} | kw))
    seed_everything(cfg.seed)
    dataset = scan_dataset(data, seed=cfg.seed)
    model, info = create_backbone(TINY_MODEL, len(dataset.classes), "none", 32, catalog_only=False)
    return Trainer(
        model, layer_groups(model), cfg, dataset, info.data_config, detect_device("cpu"), callbacks
    )


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[str] = []

    def on_fit_start(self, trainer) -> None:
        self.events.append("fit_start")

    def on_stage(self, trainer, stage, done, total) -> None:
        self.events.append(f"stage:{stage}")

    def on_phase_start(self, trainer, phase) -> None:
        self.events.append(f"phase:{phase.name}")

    def on_epoch_end(self, trainer, record) -> None:
        self.events.append(f"epoch:{record.epoch}")

    def on_fit_end(self, trainer, result) -> None:
        self.events.append("fit_end")


def test_cached_feature_extraction_learns_and_leaves_backbone_untouched(color_folders: Path) -> None:
    rec = Recorder()
    trainer = make_trainer(color_folders, [rec], strategy="feature-extraction", epochs=25, lr=3e-2)
    stem_before = trainer.model.conv_stem.weight.detach().clone()
    result = trainer.fit()
    assert result.feature_cache
    assert result.best_val_acc >= 0.8  # colours are easy even for random conv features
    assert result.trainable_params == sum(p.numel() for p in trainer.model.get_classifier().parameters())
    assert torch.equal(trainer.model.conv_stem.weight, stem_before)
    assert rec.events[0] == "fit_start" and rec.events[-1] == "fit_end"
    assert "stage:caching train features" in rec.events and "epoch:25" in rec.events


def test_full_path_fine_tune_top_unfreezes_after_warm_up(color_folders: Path) -> None:
    trainer = make_trainer(color_folders, strategy="fine-tune-top", epochs=3, unfreeze_top=1)
    result = trainer.fit()
    assert not result.feature_cache
    assert [r.phase for r in result.history] == ["warm up head", "fine-tune stage 5", "fine-tune stage 5"]
    head_only = result.history[0].trainable_params
    assert result.history[1].trainable_params > head_only


def test_frozen_batchnorm_statistics_stay_put(color_folders: Path) -> None:
    trainer = make_trainer(color_folders, strategy="feature-extraction", augment="light", epochs=1)
    bn = trainer.model.bn1
    before = bn.running_mean.clone()
    trainer.fit()
    assert torch.equal(bn.running_mean, before)


def test_train_bn_updates_batchnorm(color_folders: Path) -> None:
    trainer = make_trainer(
        color_folders, strategy="feature-extraction", augment="light", epochs=1, train_bn=True
    )
    before = trainer.model.bn1.running_mean.clone()
    trainer.fit()
    assert not torch.equal(trainer.model.bn1.running_mean, before)


def test_same_seed_same_run(color_folders: Path) -> None:
    a = make_trainer(color_folders, strategy="fine-tune-all", epochs=2, augment="light").fit()
    b = make_trainer(color_folders, strategy="fine-tune-all", epochs=2, augment="light").fit()
    assert [r.train_loss for r in a.history] == pytest.approx([r.train_loss for r in b.history])
    assert [r.val_loss for r in a.history] == pytest.approx([r.val_loss for r in b.history])


class PoisonWeights(Callback):
    """Simulates a blown-up optimiser step."""

    def on_train_batch_end(self, trainer) -> None:
        with torch.no_grad():
            trainer.model.get_classifier().weight.fill_(float("nan"))


@pytest.mark.parametrize("strategy", ["feature-extraction", "fine-tune-all"])
def test_nan_loss_stops_with_an_explanation(color_folders: Path, strategy: str) -> None:
    trainer = make_trainer(color_folders, [PoisonWeights()], strategy=strategy, epochs=2)
    with pytest.raises(TrainingDiverged, match="diverged. Lower the learning rate"):
        trainer.fit()


def test_nan_is_caught_when_the_loss_is_read_only_every_few_steps(color_folders: Path) -> None:
    """On a GPU the running loss is checked every N steps; a NaN in between still stops it."""
    trainer = make_trainer(color_folders, [PoisonWeights()], strategy="fine-tune-all", epochs=2)
    trainer.check_every = 3
    with pytest.raises(TrainingDiverged, match="The loss became nan at epoch .* Lower the learning rate"):
        trainer.fit()


@pytest.mark.parametrize("fold", [False, True])
def test_the_frozen_prefix_runs_once_and_trains_the_same_weights(color_folders: Path, fold: bool) -> None:
    """Fine-tune-top without augmentation caches the frozen bottom's maps: same epochs, same
    weights. Folding its batch norms changes only rounding (1e-4 of the loss)."""
    from tl_core import frozen_prefix

    results = {}
    for reuse in (True, False):
        rec = Recorder()
        trainer = make_trainer(color_folders, [rec], strategy="fine-tune-top", epochs=3, unfreeze_top=2)
        trainer.reuse_frozen_prefix, trainer.fold_batchnorm = reuse, fold
        results[reuse] = trainer.fit(), trainer.model.state_dict(), rec.events
    (fast, fast_weights, fast_events), (full, full_weights, full_events) = results[True], results[False]
    assert any(e.startswith("stage:caching train feature maps below blocks.") for e in fast_events)
    assert not any("feature maps" in e for e in full_events)
    assert [r.val_acc for r in fast.history] == [r.val_acc for r in full.history]
    tol = 1e-4 if fold else 1e-5
    assert [r.val_loss for r in fast.history] == pytest.approx([r.val_loss for r in full.history], rel=tol)
    for name, value in full_weights.items():
        torch.testing.assert_close(fast_weights[name], value, atol=10 * tol, rtol=10 * tol, msg=name)
    # Nothing to skip where everything trains, or where the architecture is not a plain chain.
    model, _ = create_backbone("test_vit", 3, "none", 32, catalog_only=False)
    assert frozen_prefix.feature_chain(model, torch.randn(2, 3, 32, 32)) is None


class RaiseOOM(Callback):
    def on_train_batch_end(self, trainer) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_suggests_a_smaller_batch(color_folders: Path) -> None:
    trainer = make_trainer(color_folders, [RaiseOOM()], strategy="fine-tune-all", epochs=1)
    with pytest.raises(TrainingFailed, match="Ran out of GPU memory at batch size 8. Try batch size 4"):
        trainer.fit()


@pytest.mark.parametrize("strategy", ["feature-extraction", "fine-tune-all"])
def test_stop_event_acts_within_one_batch(color_folders: Path, strategy: str) -> None:
    event = threading.Event()

    class StopAfterThree(Callback):
        batches = 0

        def on_train_batch_end(self, trainer) -> None:
            self.batches += 1
            if self.batches == 3:
                event.set()

        on_stage = lambda self, trainer, *a: self.on_train_batch_end(trainer)  # noqa: E731

    counter = StopAfterThree()
    trainer = make_trainer(color_folders, [counter, StopOnEvent(event)], strategy=strategy, epochs=5)
    result = trainer.fit()
    assert result.status == "stopped"
    assert counter.batches == 3


def test_early_stopping_and_best_weights(color_folders: Path) -> None:
    best = BestWeights()
    trainer = make_trainer(
        color_folders, [EarlyStopping(patience=2), best], strategy="feature-extraction", epochs=200, lr=0.5
    )
    result = trainer.fit()
    assert result.status == "early-stopped" and result.epochs_run < 200
    assert result.best_epoch == best.record.epoch
    # One rule: the lowest validation loss is kept, and early stopping counts from that epoch.
    losses = [r.val_loss for r in result.history]
    assert result.best_epoch == 1 + losses.index(min(losses))
    assert result.epochs_run == result.best_epoch + 2
    # The model holds the best epoch's weights, not the last one's.
    final_head = trainer.model.get_classifier().weight
    assert torch.equal(final_head, best.state["classifier.weight"])


def test_best_epoch_rule_prefers_lower_loss_then_higher_accuracy() -> None:
    from tl_core.best_epoch import best_record

    def row(epoch: int, loss: float, acc: float) -> dict:
        return {"epoch": epoch, "val_loss": loss, "val_acc": acc}

    assert best_record([row(1, 0.5, 0.9), row(2, 0.4, 0.8), row(3, float("nan"), 1.0)])["epoch"] == 2
    assert best_record([row(1, 0.4, 0.8), row(2, 0.4, 0.85), row(3, 0.4, 0.85)])["epoch"] == 2


def test_a_run_keeps_reporting_the_epoch_it_saved() -> None:
    """Runs trained before the rule kept their most accurate epoch, and recorded which."""
    from tl_core.best_epoch import kept_record

    history = [{"epoch": 1, "val_loss": 0.5, "val_acc": 0.9}, {"epoch": 2, "val_loss": 0.4, "val_acc": 0.8}]
    assert kept_record(history, {"best_epoch": "1"})["epoch"] == 1
    assert kept_record(history, None)["epoch"] == 2


def test_class_weights_only_when_imbalanced() -> None:
    assert class_weights([0] * 10 + [1] * 9, 2, "auto") is None
    w = class_weights([0] * 40 + [1] * 10, 2, "auto")
    assert w is not None and w[1] == pytest.approx(4 * w[0])
    assert class_weights([0] * 10 + [1] * 9, 2, "balanced") is not None
    assert class_weights([0] * 40 + [1] * 10, 2, "none") is None


def test_imbalanced_data_trains_with_weighted_loss(tmp_path: Path) -> None:
    data = make_class_folders(tmp_path / "imb", {"red": 30, "blue": 6})
    trainer = make_trainer(data, strategy="feature-extraction", epochs=2)
    assert trainer.criterion.weight is not None


def test_feature_cache_is_reused_and_invalidated_by_file_changes(color_folders: Path, tmp_path: Path) -> None:
    cache = tmp_path / "features"

    def run() -> tuple[list[str], object]:
        rec = Recorder()
        trainer = make_trainer(color_folders, [rec], strategy="feature-extraction", epochs=3)
        trainer.cache.folder, trainer.weights_id = cache, "random-seed-0"
        return rec.events, trainer.fit()

    first_events, first = run()
    assert "stage:caching train features" in first_events
    assert len(list(cache.glob("*.safetensors"))) == 2  # train and val
    second_events, second = run()
    assert "stage:loaded cached train features" in second_events
    assert "stage:caching train features" not in second_events
    assert [r.val_loss for r in second.history] == pytest.approx([r.val_loss for r in first.history])
    # Touching one image changes the key: features are recomputed, not served stale.
    victim = next((color_folders / "red").glob("*.png"))
    victim.write_bytes(victim.read_bytes())
    import os

    os.utime(victim, ns=(1, 1))
    third_events, _ = run()
    assert any(e.startswith("stage:caching") for e in third_events)


def test_feature_cache_prunes_least_recently_used(tmp_path: Path) -> None:
    import os

    from tl_core.training import prune_feature_cache

    for i, name in enumerate(["old", "mid", "new"]):
        f = tmp_path / f"{name}.safetensors"
        f.write_bytes(b"x" * 100)
        os.utime(f, (1000 + i, 1000 + i))
    removed = prune_feature_cache(tmp_path, max_bytes=250)
    assert [p.name for p in removed] == ["old.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mid.safetensors", "new.safetensors"]


@pytest.mark.parametrize("augment", ["light", "strong"])
def test_augment_presets_survive_their_whole_magnitude_range(augment: str) -> None:
    """RandAugment draws magnitudes at random: every op at every level must give an image
    (the strong preset once drew posterize to 0 bits, which Pillow refuses)."""
    import random

    from timm.data.auto_augment import rand_augment_transform

    from tl_core.preprocessing import AUGMENT_KWARGS, train_transform

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    cfg = {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear"}
    transform = train_transform(cfg, augment)
    random.seed(0)
    torch.manual_seed(0)
    assert all(transform(img).shape == (3, 32, 32) for _ in range(50))
    policy = AUGMENT_KWARGS[augment]["auto_augment"]
    if policy:  # each op at the largest magnitude the policy allows, applied for sure
        ra = rand_augment_transform(policy, {"translate_const": 10, "img_mean": (128, 128, 128)})
        for op in ra.ops:
            op.prob, op.magnitude_std = 1.0, 0.0
            op.magnitude = op.magnitude_max
            assert op(img).size == img.size, op.name


def test_decoded_images_are_the_decoders_own_pixels(color_folders: Path, tmp_path: Path) -> None:
    from tl_core.image_dataset import decode_all
    from tl_core.images import load_rgb

    jpg = tmp_path / "photo.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(jpg, quality=85)
    items = [(str(p), 0) for p in sorted(color_folders.rglob("*.png"))[:5]] + [(str(jpg), 1)]
    decoded = decode_all(items, draft_size=64)
    assert decoded is not None and len(decoded) == len(items)
    for (path, _), array in zip(items, decoded, strict=True):
        assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
        np.testing.assert_array_equal(array, np.asarray(load_rgb(path, 64)))
    assert decoded[-1].shape[:2] == (75, 100)  # draft mode: decoded at a quarter, still >= 64 px
    assert decode_all(items, draft_size=64, max_bytes=1000) is None  # too big to keep: none


@pytest.mark.parametrize("workers", [0, 1])
def test_augmented_training_from_decoded_images_is_the_same_training(
    color_folders: Path, workers: int
) -> None:
    """Decoding once and augmenting from memory changes nothing but the time, also with the
    data workers a GPU run uses (they get the decoded arrays when they start)."""
    results = {}
    for keep in (True, False):
        rec = Recorder()
        trainer = make_trainer(
            color_folders, [rec], strategy="fine-tune-all", epochs=2, augment="light", workers=workers
        )
        trainer.keep_decoded = keep
        results[keep] = trainer.fit(), trainer.model.state_dict(), rec.events, trainer.inputs
    (kept, kept_w, kept_events, kept_inputs), (plain, plain_w, plain_events, _) = (
        results[True],
        results[False],
    )
    assert kept_inputs is not None and kept_inputs.kind == "images"
    assert "stage:decoding train images (once, kept in memory)" in kept_events
    assert not any("decoding" in e for e in plain_events)
    assert [r.train_loss for r in kept.history] == [r.train_loss for r in plain.history]
    for name, value in plain_w.items():
        assert torch.equal(kept_w[name], value), name


def test_cached_maps_are_reused_by_the_next_run_on_the_same_data(color_folders: Path, tmp_path: Path) -> None:
    cache = tmp_path / "features"

    def run() -> tuple[list[str], Trainer]:
        rec = Recorder()
        trainer = make_trainer(color_folders, [rec], strategy="fine-tune-top", epochs=2, unfreeze_top=1)
        trainer.cache.folder, trainer.weights_id = cache, "random-seed-0"
        trainer.fit()
        return rec.events, trainer

    first_events, first = run()
    assert any(e.startswith("stage:caching train feature maps below") for e in first_events)
    assert len(list(cache.glob("*.safetensors"))) == 2
    second_events, second = run()
    assert any(e.startswith("stage:loaded cached train feature maps below") for e in second_events)
    assert not any(e.startswith("stage:caching") for e in second_events)
    assert [r.val_loss for r in second.history] == [r.val_loss for r in first.history]
    # The top, run on the cached maps, gives the features a full pass gives.
    from tl_core.feature_space import pooled_features

    items = second.dataset.items["val"]
    rows = [0, 2, 5]
    cached = second.pooled_features("val", rows)
    full, _ = pooled_features(second.model, [items[i] for i in rows], second.data_config)
    assert cached is not None
    np.testing.assert_allclose(cached.numpy(), full, atol=1e-5, rtol=1e-4)


def test_folded_batch_norm_computes_the_same_function() -> None:
    """A real timm network with non-trivial batch-norm statistics: the folded copy agrees, the
    original is untouched, and a network without batch norm is not copied."""
    import timm

    from tl_core import bn_folding

    torch.manual_seed(0)
    model = timm.create_model("efficientnet_lite0", num_classes=5).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = bn_folding.folded(model, x)
    assert fast is not None and fast is not model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    vit, _ = create_backbone("test_vit", 3, "none", 32, catalog_only=False)
    assert bn_folding.folded(vit, torch.randn(2, 3, 32, 32)) is None

    class NormFirst(torch.nn.Module):  # registered conv, bn; but the norm runs first
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 3, 3), torch.nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.bn(x))

    odd = NormFirst().eval()
    odd.bn.running_mean.fill_(0.3)
    assert bn_folding.pairs(odd) and bn_folding.folded(odd, torch.randn(2, 3, 8, 8)) is None


def test_the_fold_check_runs_in_exact_float32() -> None:
    """CUDA runs float32 convolutions as TF32 by default, off by ~1e-2 on Lite0's maps (measured
    on an H100): the check would reject every correct fold there. It turns TF32 off, then back."""
    from tl_core import bn_folding

    seen: list[bool] = []

    class Recording(torch.nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.backends.cudnn.allow_tf32)
            return super().forward(x)

    net = Recording(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    assert torch.backends.cudnn.allow_tf32
    assert bn_folding.folded(net, torch.randn(2, 3, 8, 8)) is not None
    assert False in seen and torch.backends.cudnn.allow_tf32


def test_data_workers_send_uint8_pixels_normalised_on_the_device(color_folders: Path) -> None:
    """With workers the loader's batches are uint8 (a quarter of the bytes between processes),
    and ``to_device`` makes them exactly the float batches a worker-less loader gives; a preset
    with random erasing keeps the float path (timm leaves erasing out of uint8 transforms)."""
    with_workers = make_trainer(color_folders, workers=1)
    without = make_trainer(color_folders, workers=0)
    for training in (True, False):
        (x8, y8), (x32, y32) = (next(iter(t.loader("train", training))) for t in (with_workers, without))
        assert x8.dtype == torch.uint8 and x32.dtype == torch.float32
        torch.testing.assert_close(with_workers.to_device(x8), without.to_device(x32))
        assert torch.equal(y8, y32)
    strong = make_trainer(color_folders, workers=1, augment="strong")
    assert next(iter(strong.loader("train", training=True)))[0].dtype == torch.float32


def test_batches_come_in_the_same_order_with_or_without_data_workers(color_folders: Path) -> None:
    """The sampler has its own generator: persistent GPU-style workers, none, or cached tensors
    all give the same batches, epoch after epoch (the maps path relies on it)."""
    from tl_core.training import inputs

    trainer = make_trainer(color_folders, strategy="fine-tune-all", epochs=2)
    n = len(trainer.dataset.items["train"])

    class Index(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int) -> int:
            return i

    def epochs(loader) -> list[list[int]]:  # type: ignore[no-untyped-def]
        return [
            [int(i) for batch in loader for i in (batch[0] if isinstance(batch, tuple | list) else batch)]
            for _ in range(2)
        ]

    workers = inputs._loader(trainer, Index(), True, num_workers=1, persistent_workers=True)
    plain = inputs._loader(trainer, Index(), True)
    cached = inputs.tensor_loader(trainer, torch.arange(n), torch.zeros(n, dtype=torch.long), shuffle=True)
    order = epochs(plain)
    assert order[0] != order[1] and sorted(order[0]) == list(range(n))
    assert epochs(workers) == order == epochs(cached)


def test_images_packed_on_the_device_train_as_the_cpu_path(color_folders: Path) -> None:
    """Without augmentation, packing on the device changes nothing; with it, the batch is
    augmented there (the GPU default) and training still learns."""
    results = {}
    for on_device in (True, False):
        trainer = make_trainer(color_folders, strategy="fine-tune-all", epochs=2, augment="none")
        trainer.augment_on_device, trainer.reuse_frozen_prefix = on_device, False
        results[on_device] = trainer.fit(), type(trainer.inputs.train).__name__
    (dev, dev_kind), (cpu, cpu_kind) = results[True], results[False]
    assert (dev_kind, cpu_kind) == ("DeviceBatches", "DataLoader")
    assert [r.val_loss for r in dev.history] == pytest.approx([r.val_loss for r in cpu.history], rel=1e-5)
    assert [r.train_loss for r in dev.history] == pytest.approx([r.train_loss for r in cpu.history], rel=1e-5)
    trainer = make_trainer(color_folders, strategy="fine-tune-all", epochs=6, augment="light", lr=0.05)
    trainer.augment_on_device = True
    light = trainer.fit()
    assert type(trainer.inputs.train).__name__ == "DeviceBatches"
    assert all(np.isfinite(r.train_loss) for r in light.history) and light.best_val_acc > 0.5
