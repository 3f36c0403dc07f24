"""The Streamlit app starts and offers the sample run (AppTest, no browser)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]


def test_home_page_renders_without_errors() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception
    assert at.title[0].value == "Transfer Learning Studio"
    assert any("sample" in b.label for b in at.button)


def test_engine_never_imports_streamlit() -> None:
    offenders = [
        p.name
        for p in (ROOT / "tl_core").glob("*.py")
        if any(
            line.lstrip().startswith(("import streamlit", "from streamlit"))
            for line in p.read_text().splitlines()
        )
    ]
    assert offenders == []
