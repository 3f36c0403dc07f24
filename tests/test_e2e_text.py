"""Texts end to end in a real browser: upload a CSV, check the guessed columns, take the wizard's
recommendation, train by feature extraction on the bundled MiniLM, and read Results (the TF-IDF
baseline, the confident mistakes, Try it). Screenshots go to test-artifacts/."""

from __future__ import annotations

from pathlib import Path

from test_text import sentences

from conftest import ROOT, needs_chromium, serve_app

SHOTS = ROOT / "test-artifacts" / "screenshots"
pytestmark = needs_chromium


def test_upload_a_csv_train_and_read_results(browser, tmp_path: Path) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    data = tmp_path / "reviews.csv"
    data.write_text(  # a realistic table: an id, the text, the label
        "id,review,topic\n" + "".join(f'{i},"{t}",{y}\n' for i, (t, y) in enumerate(sentences(30))),
        encoding="utf-8",
    )
    with serve_app(tmp_path / "home") as url:
        page = browser.new_page(viewport={"width": 1280, "height": 1600})

        def no_exception() -> None:
            assert page.locator('[data-testid="stException"]').count() == 0

        def shot(name: str) -> None:
            page.screenshot(path=str(SHOTS / f"text-{name}.png"))

        page.goto(url)
        page.get_by_role("button", name="Use my own images").click()
        page.get_by_text("Upload a text file (CSV, TSV, JSONL)").click()
        page.get_by_text("One text per row, with its label").wait_for(timeout=30_000)
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(data))
        page.get_by_text("reviews.csv: 3 classes, 90 usable texts").wait_for(timeout=90_000)
        page.get_by_text("Texts from column review, labels from topic").wait_for(timeout=60_000)
        no_exception()
        shot("1-data")

        page.get_by_role("button", name="Next: choose a strategy →").click()
        page.get_by_text("Recommended: feature extraction").wait_for(timeout=60_000)
        assert page.get_by_text("How similar are your texts to everyday written English?").count() == 1
        no_exception()
        shot("2-strategy")
        page.get_by_role("button", name="Accept recommendation").click()
        page.get_by_text("Recommended: all-minilm-l6-v2").wait_for(timeout=60_000)
        no_exception()
        shot("3-backbone")
        page.get_by_role("button", name="Next: freeze & train →").click()
        page.get_by_text("Trainable parameters").wait_for(timeout=60_000)
        assert page.get_by_text("embeddings", exact=False).count() >= 1
        page.get_by_role("button", name="Start training").click()
        page.get_by_role("link", name="See the results →").wait_for(timeout=300_000)
        no_exception()
        shot("4-train")

        page.get_by_role("link", name="See the results →").click()
        page.get_by_text("Against a classical baseline").wait_for(timeout=60_000)
        assert page.get_by_text("TF-IDF + logistic regression").count() >= 1
        page.get_by_text("Try it").scroll_into_view_if_needed()
        page.get_by_placeholder("Type or paste a text…").fill("the striker scored a penalty in the match")
        page.get_by_role("button", name="Classify").click()
        page.get_by_text("sport:").wait_for(timeout=60_000)
        no_exception()
        shot("5-results")
        page.close()
