"""A room in a real browser: four students in four browser contexts on one workshop server.

One of them first uploads a zip with a path trick and is told why it was refused; then all four
train on the sample at once (their jobs queue fairly in the worker process), and each one's
Results lists only their own run. A job id or run id from another workspace, typed into the URL,
shows nothing of it. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from conftest import ROOT, make_class_folders, needs_chromium, serve_app

SHOTS = ROOT / "test-artifacts" / "screenshots"
pytestmark = needs_chromium
STUDENTS = ["Ada", "Grace", "Alan", "Katherine"]


@pytest.fixture(scope="module")
def room_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("room-home")
    with serve_app(home, TL_STUDIO_WORKSHOP="1", TL_STUDIO_INSTRUCTOR_TOKEN="room-42") as url:
        yield url


def _query(page) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


def _no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0


def _join(browser, url: str, name: str):
    page = browser.new_context(viewport={"width": 1280, "height": 1400}).new_page()
    page.goto(url)
    page.get_by_label("Your name").fill(name)
    page.get_by_role("button", name="Join").click()
    page.get_by_text(f"Signed in as {name}").wait_for(timeout=60_000)
    assert _query(page).get("ws")
    return page


def _upload_bad_zip(page, tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "slip", {"red": 3, "green": 3})
    archive = tmp_path / "slip.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in root.rglob("*.*"):
            zf.write(f, f.relative_to(root))
        zf.writestr("../../escape.png", b"not here")
    page.get_by_role("button", name="Use my own images").click()
    dropzone = page.locator('[data-testid="stFileUploaderDropzoneInput"]').first
    dropzone.wait_for(state="attached", timeout=30_000)
    dropzone.set_input_files(str(archive))
    error = page.locator('[data-testid="stAlert"]').filter(has_text="Refused slip.zip")
    error.wait_for(timeout=60_000)
    assert "../../escape.png" in error.inner_text()
    _no_exception(page)
    page.screenshot(path=str(SHOTS / "room-bad-zip.png"))
    page.get_by_role("link", name="Home").click()


def _start_sample(page) -> None:
    page.get_by_role("button", name="Start with the sample dataset").click()
    page.get_by_text("1797 usable images").wait_for(timeout=120_000)
    page.get_by_role("button", name="Next: choose a strategy →").click()
    page.get_by_text("Everyday photos: pets").click()  # feature extraction: seconds per student
    page.get_by_text("Recommended: feature extraction").wait_for(timeout=60_000)
    page.get_by_role("button", name="Accept recommendation").click()
    page.get_by_role("button", name="Next: freeze & train →").click()
    page.get_by_role("button", name="Start training").click()
    page.locator('[data-testid="stProgress"], [data-testid="stAlert"]').first.wait_for(timeout=60_000)
    assert _query(page).get("job")


def test_four_students_train_and_see_only_their_own_runs(room_url: str, browser, tmp_path: Path) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pages = [_join(browser, room_url, name) for name in STUDENTS]
    _upload_bad_zip(pages[0], tmp_path)
    for page in pages:
        _start_sample(page)
    ids = [_query(p) for p in pages]
    assert len({q["ws"] for q in ids}) == 4 and len({q["job"] for q in ids}) == 4
    pages[-1].screenshot(path=str(SHOTS / "room-queued.png"))

    deadline = time.monotonic() + 600
    waiting = set(range(4))
    while waiting and time.monotonic() < deadline:
        for i in list(waiting):
            if pages[i].get_by_text("See the results").count():
                waiting.discard(i)
            _no_exception(pages[i])
        time.sleep(1)
    assert not waiting, f"students {sorted(waiting)} never finished"

    run_ids = []
    for name, page in zip(STUDENTS, pages, strict=True):
        page.get_by_text("See the results").click()
        page.get_by_text("Confusion matrix", exact=True).wait_for(timeout=60_000)
        _no_exception(page)
        assert page.get_by_text(f"Signed in as {name}").count() or page.get_by_text(name).count()
        picker = page.locator('[data-testid="stSelectbox"]').first
        picker.click()
        options = page.locator('[role="listbox"] [role="option"]')
        options.first.wait_for(timeout=10_000)
        assert options.count() == 1, [options.nth(i).inner_text() for i in range(options.count())]
        page.keyboard.press("Escape")
        run_ids.append(_query(page).get("run"))
    pages[1].screenshot(path=str(SHOTS / "room-results.png"))

    # Ada's job and run ids, typed into Grace's URL: nothing of Ada's shows.
    ada, grace = ids[0], ids[1]
    intruder = pages[1]
    intruder.goto(f"{room_url}/train?ws={grace['ws']}&job={ada['job']}")
    intruder.get_by_role("button", name="Start training").or_(
        intruder.get_by_text("First choose")
    ).first.wait_for(timeout=60_000)
    time.sleep(2)
    assert intruder.locator('[data-testid="stProgress"]').count() == 0
    assert _query(intruder).get("job") != ada["job"]
    _no_exception(intruder)
    if run_ids[0]:
        intruder.goto(f"{room_url}/results?ws={grace['ws']}&run={run_ids[0]}")
        intruder.get_by_text("not found").first.wait_for(timeout=60_000)
        intruder.get_by_text("Image from").wait_for(timeout=60_000)  # Grace's own run, fully drawn
        _no_exception(intruder)
    intruder.screenshot(path=str(SHOTS / "room-not-found.png"))
