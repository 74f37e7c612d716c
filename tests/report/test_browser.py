"""The HTML report in a real browser, offline: every section heading is there, every chart
rendered, and the page asked the network for nothing.

Needs the ``playwright`` Python package and Chromium at /usr/bin/chromium (Debian's
``chromium`` package); never ``playwright install``. Skipped only when one is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gradprobe.report.build import build_report
from gradprobe.report.html import write_html

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not CHROMIUM.exists() and not shutil.which("chromium"):
    pytest.skip("Chromium is not installed at /usr/bin/chromium", allow_module_level=True)


def open_offline(path: Path, check) -> None:
    """Open ``path`` (file://) with every non-file request aborted; call ``check(page)``."""
    left: list[str] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console",
                    lambda msg: errors.append(msg.text) if msg.type == "error" else None)

            def route(r):
                if r.request.url.startswith("file://"):
                    r.continue_()
                else:
                    left.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.goto(path.resolve().as_uri(), wait_until="load")
            check(page)
        finally:
            browser.close()
    assert left == [], f"the report asked the network for {left}"
    assert errors == [], errors


def test_report_renders_offline_with_every_section(records, tmp_path):
    report = build_report(records)
    path = write_html(report, tmp_path / "report.html")
    n_figures = len(report.figures())

    def check(page):
        page.wait_for_function(
            f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n_figures}",
            timeout=60_000)
        headings = page.locator("section > h2").all_inner_texts()
        assert headings == [s.title for s in report.sections]
        assert page.locator(".js-plotly-plot").count() == n_figures
        # every chart drew its traces: at least one data layer with marks in each plot
        drawn = page.evaluate(
            "Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => "
            "d.querySelectorAll('.main-svg .trace, .main-svg .hm, .main-svg image').length)")
        assert all(n > 0 for n in drawn), drawn

    open_offline(path, check)
