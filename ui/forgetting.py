"""The Results page's forgetting meter: how much ImageNet knowledge the run kept."""

from __future__ import annotations

from typing import Any

import streamlit as st

from tl_core.forgetting import KEPT_HELP, REPORT_FILE, load_report, missing_reason, report_frame, summary
from tl_core.runs import Run


@st.cache_data(show_spinner=False, max_entries=8)
def _table(run_dir: str, mtime_ns: int) -> Any:
    """The per-image table with thumbnails, built once per report file (~100 small decodes)."""
    run = Run(run_dir)
    report = load_report(run)
    return report_frame(report, run) if report else None


def forgetting_block(run: Run) -> None:
    st.subheader("Forgetting meter")
    report = load_report(run)
    if report is None:
        st.info(missing_reason(run), icon=":material/info:")
        return
    left, right = st.columns([1, 2])
    left.metric("ImageNet knowledge kept", f"{report.kept:.0%}", help=KEPT_HELP)
    right.markdown(summary(report))
    if report.by_construction or not report.rows:
        return
    table = _table(str(run.dir), (run.dir / REPORT_FILE).stat().st_mtime_ns)
    st.caption(
        "Each probe image's ImageNet top-1 class, read through the original ImageNet classifier, "
        "before → after training (with its confidence). Changed rows first."
    )
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        height=min(38 * (len(table) + 1), 420),
        row_height=38,
        column_config={"image": st.column_config.ImageColumn("image", width="small")},
    )
