"""Backbone: the catalog with time estimates for this data on this machine (for texts: the encoders)."""

from typing import Any

import pandas as pd
import streamlit as st

import ui
from tl_core.advisor import recommend_backbone
from tl_core.backbones import list_backbones, weights_status
from tl_core.config import DEFAULT_TEXT_BACKBONE, TrainConfig
from tl_core.devices import detect_device
from tl_core.estimates import ONCE_NOTE, epoch_label, estimate_epoch, frozen_share, runs_once
from tl_core.text_models import TEXT_BACKBONES, text_weights_status


def text_backbones(cfg: TrainConfig, device: Any) -> None:
    """The Backbone page for texts: the encoders, which work offline, and the choice."""
    status = {name: text_weights_status(spec) for name, spec in TEXT_BACKBONES.items()}
    ready = {name: s != "needs download" for name, s in status.items()}
    rows = [
        {
            "": "⭐" if name == DEFAULT_TEXT_BACKBONE else "",
            "encoder": name,
            "family": spec.family,
            "params (M)": spec.params_m,
            "layers": spec.layers,
            "max word pieces": spec.max_length,
            "pooling": spec.pooling,
            "weights": f"offline ({status[name]})" if ready[name] else status[name],
            "best for": spec.best_for,
        }
        for name, spec in TEXT_BACKBONES.items()
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.info(
        f"⭐ Recommended: **{DEFAULT_TEXT_BACKBONE}**. It is bundled (works offline) and small enough "
        f"to fine-tune on {device.label}; its mean-pooled embeddings are good features as they are."
    )
    pick("Encoder", cfg, ready, DEFAULT_TEXT_BACKBONE, "")


def pick(label: str, cfg: TrainConfig, ready: dict[str, bool], recommended: str, star: str) -> None:
    """The backbone choice (``star`` marks the recommended one), what a download means, and on."""
    names = list(ready)
    choice = st.selectbox(
        label,
        names,
        index=names.index(cfg.backbone if cfg.backbone in names else recommended),
        format_func=lambda n: (
            f"{n}{star if n == recommended else ''}" + ("" if ready[n] else "  (needs download)")
        ),
    )
    if not ready[choice]:
        st.warning(
            f"{choice}'s weights are not on this machine. Training will try to download them; "
            f"offline, run `tl-studio prefetch {choice}` beforehand or pick an offline {label.lower()} "
            f"({recommended})."
        )
    if choice != cfg.backbone:
        ui.set_config(cfg.for_backbone(choice))
    ui.next_button("train", "Next: freeze & train →")


ui.sidebar()
ui.require_workspace()
st.title("3. Backbone")
st.caption("The pretrained network whose features you reuse. Bigger is more accurate but slower.")
ds = ui.require_dataset()
cfg = ui.config()
p = ds.profile
device = detect_device("auto")
if p.modality == "text":
    text_backbones(cfg, device)
    st.stop()
specs = list_backbones()
status = {s.name: weights_status(s) for s in specs}
ready = {n: st_ != "needs download" for n, st_ in status.items()}
rate = ui.device_rate()
recommended, why = recommend_backbone(specs, ready, device.device == "cuda")

rows = []
size = cfg.image_size or p.suggested_image_size
two_part = False
for s in specs:
    frozen = frozen_share(s.name, size or s.input_size, cfg.for_backbone(s.name))
    once = runs_once(cfg) and frozen > 0
    est = estimate_epoch(
        s, p.n_train, p.n_val, size, cfg.strategy, cfg.uses_feature_cache, rate, frozen, once
    )
    timing = epoch_label(est, cfg.uses_feature_cache, once)
    two_part = two_part or once
    rows.append(
        {
            "": "⭐" if s.name == recommended else "",
            "backbone": s.name,
            "family": s.family,
            "params (M)": s.params_m,
            "ImageNet top-1 %": s.top1,
            "input px": s.input_size,
            "time per epoch": timing,
            "weights": f"offline ({status[s.name]})" if ready[s.name] else status[s.name],
            "best for": s.best_for,
        }
    )
table = pd.DataFrame(rows)
flt = st.radio("Show", ["all", "fast / small", "most accurate", "available offline"], horizontal=True)
if flt == "fast / small":
    table = table[table["params (M)"] <= 7]
elif flt == "most accurate":
    table = table.sort_values("ImageNet top-1 %", ascending=False).head(5)
elif flt == "available offline":
    table = table[table["weights"].str.startswith("offline")]
st.dataframe(table, hide_index=True, width="stretch")
st.caption(
    f"Times are estimates for your {p.n_train + p.n_val} images on {device.label}, "
    "from a quick measurement of this machine." + (f" {ONCE_NOTE}" if two_part else "")
)
st.info(f"⭐ Recommended: **{recommended}**. {why}")

pick("Backbone", cfg, ready, recommended, "  ⭐")
