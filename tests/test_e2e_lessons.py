"""The "Does pretraining help?" lesson in a real browser, on the digits sample with the bundled
EfficientNet-Lite0 and the shortest budget: three runs queue, their curves overlay while they
train, a verdict quotes their numbers, and a refresh finds the experiment again. Then the Runs
page lists the three runs. Screenshots go to test-artifacts/ (lessons-curves.png is the
README's docs/pretraining.png).

On 2 CPU cores a 30 s budget lets feature extraction finish and fine-tune top run an epoch or
two, while from scratch at 128 px may not finish its first epoch: the verdict then says so. Set
``TL_STUDIO_E2E_LESSON_BUDGET="2 min"`` to make the README's picture with longer curves."""

from __future__ import annotations

import os
import re
import time

from conftest import ROOT, needs_chromium, serve_app

SHOTS = ROOT / "test-artifacts" / "screenshots"
pytestmark = needs_chromium
VERDICT = "Guessing would score"
BUDGET = os.environ.get("TL_STUDIO_E2E_LESSON_BUDGET", "30 s")


def test_does_pretraining_help_on_the_sample(browser, tmp_path) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with serve_app(tmp_path / "home") as url:
        page = browser.new_page(viewport={"width": 1280, "height": 1500})

        def no_exception() -> None:
            assert page.locator('[data-testid="stException"]').count() == 0

        page.goto(url)
        page.get_by_role("button", name="Start with the sample dataset").click()
        page.get_by_text("1797 usable images").wait_for(timeout=90_000)
        page.get_by_role("link", name="Lessons").click()
        page.get_by_text("Time budget per run").wait_for(timeout=60_000)
        no_exception()
        page.get_by_text(BUDGET, exact=True).click()
        page.get_by_text(f"3 runs of at most {BUDGET} each").wait_for(timeout=30_000)
        page.get_by_role("button", name="Run the experiment").click()
        page.get_by_role("button", name="Stop this experiment").wait_for(timeout=60_000)
        assert "exp=pretraining-" in page.url

        # The chart gains points while the runs train, polled by the page itself.
        points: list[int] = []
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            points.append(page.locator('[data-testid="stPlotlyChart"] .scatterlayer .point').count())
            if page.get_by_text(VERDICT).count():
                break
            time.sleep(1.0)
        page.get_by_text(VERDICT).wait_for(timeout=5_000)
        no_exception()
        assert len(set(points)) >= 2, points  # it moved while we watched
        verdict = page.get_by_text(VERDICT).inner_text()
        assert re.search(r"reached \d+\.\d%", verdict), verdict
        assert "From scratch" in verdict and f"{BUDGET} budget" in verdict
        chart = page.locator('[data-testid="stPlotlyChart"]').first
        chart.scroll_into_view_if_needed()
        time.sleep(1.0)  # plotly's transition
        chart.screenshot(path=str(SHOTS / "lessons-curves.png"))
        page.screenshot(path=str(SHOTS / "lessons.png"))
        page.get_by_text(VERDICT).scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "lessons-verdict.png"))

        # A refresh rebuilds the experiment from the URL and the run folders.
        page.reload()
        page.get_by_text(VERDICT).wait_for(timeout=60_000)
        assert page.get_by_text(VERDICT).inner_text() == verdict
        no_exception()

        page.get_by_role("link", name="Runs", exact=True).click()
        page.get_by_text("Tick runs to compare").wait_for(timeout=60_000)
        no_exception()
        page.screenshot(path=str(SHOTS / "runs.png"))
