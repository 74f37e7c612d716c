"""The playground in a real Chromium (Debian's package, driven by Playwright), offline.

Every request the page makes is checked: anything not addressed to the test server is
recorded and aborted, and the test fails if there was any. Set ``GRADPROBE_SCREENSHOTS=DIR``
to save the screenshots docs/playground.md shows.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import gradprobe as gp
from gradprobe.serve.config import check
from gradprobe.store import Store

from .conftest import wait_until

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("Chromium is not installed (apt-get install -y chromium)", allow_module_level=True)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
LONG = "depth=20&width=64&dataset=iris&steps=5000&batch_size=32"


def shot(page, name: str) -> None:
    folder = os.environ.get("GRADPROBE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"playground-{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, live_server):
    """A fresh page (its own cookie, so its own client); offline and error-free, checked."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    left: list[str] = []
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

    def route(r):
        if r.request.url.startswith(live_server.url + "/"):
            r.continue_()
        else:
            left.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.errors = errors
    yield page
    context.close()
    assert left == [], f"the page asked outside the server for {left}"


def open_page(page, live_server, query: str = "") -> None:
    page.goto(f"{live_server.url}/{'?' + query if query else ''}")
    page.wait_for_function("document.body.dataset.ready === '1'")


def wait_theory(page, depth: int, activation: str) -> None:
    page.wait_for_function(
        f"document.getElementById('theory').dataset.depth === '{depth}' && "
        f"document.getElementById('theory').dataset.activation === '{activation}'")


def test_theory_panel_follows_the_controls(page, live_server):
    open_page(page, live_server)
    page.fill("#c-depth", "17")
    page.dispatch_event("#c-depth", "change")
    page.select_option("#c-activation", "tanh")
    wait_theory(page, 17, "tanh")
    config = dict(p.split("=") for p in page.url.split("?")[1].split("&"))
    ref = gp.theory.predict(check(config)[1])
    shown = {k: json.loads(page.get_attribute(f"#th-{k}", "data-value"))
             for k in ("chi1", "q_star", "xi_grad", "phase", "log10_grad_ratio")}
    assert shown["chi1"] == ref.chi1 and shown["q_star"] == ref.q_star
    assert shown["phase"] == ref.phase
    assert shown["xi_grad"] == (ref.xi_grad if ref.xi_grad != float("inf") else "inf")
    page.select_option("#c-norm", "layer")  # batch norm has its theory; layer norm has none
    page.wait_for_selector("#theory-reason:not([hidden])")
    assert "normalisation" in page.inner_text("#theory-reason")
    assert page.inner_text("#th-chi1") == "n/a"
    assert page.errors == []


def test_training_streams_grows_and_stops_interrupted(page, live_server):
    open_page(page, live_server, LONG)
    shot(page, "theory")
    page.click("#train")
    columns = "document.getElementById('heatmap').data ? " \
              "document.getElementById('heatmap').data[0].x.length : 0"
    page.wait_for_function(f"({columns}) >= 2")
    seen = page.evaluate(columns)
    page.wait_for_function(f"({columns}) >= {seen + 2}")  # the heat map grows
    assert page.evaluate("document.getElementById('loss-plot').data[0].x.length") > 0
    run_id = page.get_attribute("#job-status", "data-run-id")
    shot(page, "training")
    page.click("#stop")
    page.wait_for_function("document.getElementById('job-status').dataset.status "
                           "=== 'interrupted'")
    with Store(live_server.store) as db:
        assert db.run(run_id)["status"] == "interrupted"
    overlay = page.locator("#overlays label")
    assert overlay.count() == 1 and run_id in overlay.inner_text()  # ready to compare
    assert page.errors == []


def test_a_shared_url_restores_the_controls(page, live_server, browser):
    query = ("depth=7&width=48&activation=elu&init=orthogonal&sigma_b2=0.1&residual=true"
             "&dataset=wine&lr=0.2&optimizer=adam&seed=3")
    open_page(page, live_server, query)
    for key, value in (p.split("=") for p in query.split("&")):
        if key == "residual":
            assert page.is_checked("#c-residual")
        else:
            assert page.input_value(f"#c-{key}") == value, key
    page.select_option("#c-activation", "gelu")
    wait_theory(page, 7, "gelu")
    other = browser.new_page()
    try:
        other.goto(page.url)
        other.wait_for_function("document.body.dataset.ready === '1'")
        assert other.input_value("#c-activation") == "gelu"
        assert other.input_value("#c-depth") == "7"
    finally:
        other.close()


def test_a_bad_value_shows_the_one_line_error(page, live_server):
    open_page(page, live_server)
    page.fill("#c-depth", "500")
    page.dispatch_event("#c-depth", "change")
    page.wait_for_selector("#error:not([hidden])")
    expected = httpx.post(f"{live_server.url}/api/theory", json={"depth": "500"}).json()["error"]
    assert page.inner_text("#error") == expected
    assert "net.depth" in expected and "\n" not in expected
    assert "bad" in page.get_attribute("#c-depth", "class")
    assert "stale" in page.get_attribute("#theory", "class")  # old numbers are marked
    page.click("#train")  # refused with the same line, nothing started
    assert page.inner_text("#error") == expected
    assert live_server.running() == 0
    shot(page, "error")


def test_closing_the_page_mid_run_frees_the_slot(browser, live_server):
    page = browser.new_page()
    open_page(page, live_server, LONG)
    page.click("#train")
    page.wait_for_function("document.getElementById('job-status').dataset.runId")
    run_id = page.get_attribute("#job-status", "data-run-id")
    assert live_server.running() == 1
    page.close()
    wait_until(lambda: live_server.running() == 0, 20, "the slot to be freed")
    with Store(live_server.store) as db:
        row = db.run(run_id)
    assert row["status"] == "interrupted"
    assert "the page closed" in row["summary"]["stop_reason"]


def test_diagnose_button_lists_findings(page, live_server):
    open_page(page, live_server, "depth=15&width=32&dataset=iris&steps=20&batch_size=32")
    page.click("#diagnose")
    page.wait_for_function("document.getElementById('job-status').dataset.status "
                           "=== 'complete'", timeout=60_000)
    assert page.locator("#findings li").count() >= 1
    assert "vanishing_gradient" in page.inner_text("#findings")
    if os.environ.get("GRADPROBE_SCREENSHOTS"):
        page.click("#repair")
        page.wait_for_function("document.getElementById('job-status').dataset.status "
                               "=== 'running'")
        page.wait_for_function("document.getElementById('job-status').dataset.status "
                               "=== 'complete'", timeout=120_000)
        shot(page, "diagnosis")
    assert page.errors == []
