"""Webcam capture end to end: Chromium's fake camera (a moving test pattern) feeding
`st.camera_input` on the Data page of `streamlit run app.py`.

Names two classes, takes photos of each (one click per photo), deletes a bad shot, uses the
set, and checks that the scanner and the sidebar see it as ordinary data. Screenshots go to
test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import CHROMIUM, CHROMIUM_ARGS, ROOT, needs_chromium, serve_app

SHOTS = ROOT / "test-artifacts" / "screenshots"
FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
"""A moving test pattern instead of a webcam, and camera permission granted without asking."""
pytestmark = needs_chromium


@pytest.fixture
def camera_browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + FAKE_CAMERA)
        yield b
        b.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def app_url(home: Path) -> Iterator[str]:
    with serve_app(home) as url:
        yield url


def test_capture_two_classes_with_the_fake_camera(app_url: str, camera_browser, home: Path) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import expect

    page = camera_browser.new_page(viewport={"width": 1280, "height": 1400})
    camera_set = home / "uploads" / "camera"

    def no_exception() -> None:
        assert page.locator('[data-testid="stException"]').count() == 0

    def on_disk(cls: str) -> list[str]:
        return sorted(p.name for p in (camera_set / cls).glob("*.jpg"))

    def count_says(cls: str, n: int) -> None:
        try:
            page.get_by_text(f"{cls}: {n} photo{'s' if n != 1 else ''}", exact=True).wait_for(timeout=30_000)
        except Exception:
            page.screenshot(path=str(SHOTS / "capture-failed.png"), full_page=True)
            raise

    def camera_key() -> int:
        css = page.locator('[class*="st-key-cap_cam_"]').get_attribute("class") or ""
        return int(re.search(r"st-key-cap_cam_(\d+)", css).group(1))

    clicks = [0]

    def take_photo(cls: str) -> None:
        """One click once the fake camera plays; each shot the app receives gives the camera a
        fresh key, and a fresh fake stream. Its frames depend on the time since that stream
        started, so each click waits a different time, else two photos are the same frame (the
        app keeps those once, or refuses them in a second class, saying so). A user would take
        it again; so does this, at most three times."""
        before = len(on_disk(cls))
        for _ in range(3):
            clicks[0] += 1
            page.wait_for_function(
                "t => { const vs = [...document.querySelectorAll('[data-testid=stCameraInput] video')];"
                " return vs.length > 0 && vs.every(v => v.readyState >= 2 && v.currentTime > t); }",
                arg=0.3 + 0.25 * clicks[0],
                timeout=30_000,
            )
            key = camera_key()
            page.get_by_role("button", name="Take Photo").click()
            page.locator(f".st-key-cap_cam_{key + 1}").wait_for(state="attached", timeout=30_000)
            if len(on_disk(cls)) == before + 1:
                count_says(cls, before + 1)  # every click adds one; the earlier shots stay
                return
        page.screenshot(path=str(SHOTS / "capture-failed.png"), full_page=True)
        pytest.fail(f"three photos of {cls} in a row were not saved")

    page.goto(app_url)
    page.get_by_role("button", name="Use my own images").click()
    page.get_by_text("Capture with the camera").click()
    for name in ("thumbs up", "fist"):
        page.get_by_label("New class name").fill(name)
        page.get_by_role("button", name="Add class").click()
        count_says(name, 0)
    page.get_by_text("Take at least 2 photos of each class").wait_for()
    no_exception()

    for cls, n in (("thumbs up", 3), ("fist", 2)):
        page.locator(".st-key-cap_class").get_by_text(cls, exact=True).click()
        page.get_by_text(f"Take a photo of {cls}").wait_for()
        for _ in range(n):
            take_photo(cls)
        assert len(on_disk(cls)) == n
    no_exception()
    page.screenshot(path=str(SHOTS / "capture-1-photos.png"), full_page=True)

    # Delete a bad shot: the first thumbnail of the first class (sorted: "fist").
    kept = on_disk("fist")
    page.locator('[class*="st-key-cap_del_fist_"] button').first.click()
    count_says("fist", 1)
    assert len(on_disk("fist")) == 1 and set(on_disk("fist")) < set(kept)
    page.get_by_text("fist needs 1 more").wait_for()  # not enough to train: no "Use" button
    expect(page.get_by_role("button", name="Use these 4 photos")).to_have_count(0)
    page.locator(".st-key-cap_class").get_by_text("fist", exact=True).click()
    take_photo("fist")
    count_says("fist", 2)

    page.get_by_role("button", name="Use these 5 photos").click()
    page.get_by_text("camera photos: 2 classes, 5 usable images").wait_for(timeout=60_000)
    page.get_by_text("These photos are your data").wait_for()
    expect(page.get_by_role("button", name="Use these 5 photos")).to_have_count(0)  # in use now
    no_exception()
    metrics = page.locator('[data-testid="stMetric"]')
    assert metrics.filter(has_text="Classes").inner_text().endswith("2")
    sidebar = page.locator('[data-testid="stSidebar"]')
    assert "camera photos" in sidebar.inner_text()
    assert "2 classes, 3 train / 2 val" in sidebar.inner_text()
    page.screenshot(path=str(SHOTS / "capture-2-used.png"), full_page=True)
    page.get_by_role("button", name="Next: choose a strategy →").click()
    page.get_by_text("Recommended:").first.wait_for(timeout=60_000)
    no_exception()
