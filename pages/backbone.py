"""Backbone: the catalog with time estimates for this data on this machine."""

import pandas as pd
import streamlit as st

import ui
from tl_core.advisor import recommend_backbone
from tl_core.backbones import list_backbones, weights_status
from tl_core.devices import detect_device
from tl_core.estimates import ONCE_NOTE, epoch_label, estimate_epoch, frozen_share, runs_once

ui.sidebar()
ui.require_workspace()
st.title("3. Backbone")
st.caption("The pretrained network whose features you reuse. Bigger is more accurate but slower.")
ds = ui.require_dataset()
cfg = ui.config()
p = ds.profile
device = detect_device("auto")
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

names = [s.name for s in specs]
choice = st.selectbox(
    "Backbone",
    names,
    index=names.index(cfg.backbone if cfg.backbone in names else recommended),
    format_func=lambda n: (
        f"{n}{'  ⭐' if n == recommended else ''}" + ("" if ready[n] else "  (needs download)")
    ),
)
if not ready[choice]:
    st.warning(
        f"{choice}'s weights are not on this machine. Training will try to download them; "
        f"offline, run `tl-studio prefetch {choice}` beforehand or pick an offline backbone."
    )
if choice != cfg.backbone:
    ui.set_config(cfg.for_backbone(choice))
ui.next_button("train", "Next: freeze & train →")
