"""The playground's HTTP API through Starlette's ASGI test client: theory, validation, jobs.

References: the theory panel against ``gp.theory.predict``; error lines against the CLI's
own output for the same override; stored runs against ``gp.run`` of the same spec; streamed
repair verdicts against one ``gp.repair`` call over every candidate.
"""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

import gradprobe as gp
from gradprobe.cli import app as cli_app
from gradprobe.data import load_data
from gradprobe.nets.activations import activation_names
from gradprobe.nets.init import init_names
from gradprobe.nets.plain import build
from gradprobe.serve import create_app
from gradprobe.serve.config import check
from gradprobe.store import Store

testclient = pytest.importorskip("starlette.testclient", reason="gradprobe[serve] missing")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TINY = {"depth": 3, "width": 8, "dataset": "iris", "steps": 20, "batch_size": 32}
LONG = {**TINY, "steps": 5000}


def client_for(app) -> testclient.TestClient:
    client = testclient.TestClient(app)
    assert client.get("/").status_code == 200  # the page gives this client its cookie
    return client


def events(client, job_id: str) -> list[dict]:
    text = client.get(f"/api/jobs/{job_id}/events").text
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def start(client, config, kind="train"):
    return client.post("/api/jobs", json={"kind": kind, "config": config})


@pytest.fixture
def app(tmp_path):
    return create_app(store=tmp_path / "runs.sqlite", max_running=1)


@pytest.mark.parametrize("config", [
    {"depth": 20, "activation": "tanh", "init": "normal", "sigma_w2": 1.5, "sigma_b2": 0.05},
    {"depth": 10, "activation": "relu", "init": "he_normal"},
    {"depth": 30, "activation": "sigmoid", "init": "xavier_normal", "width": 128},
])
def test_theory_panel_equals_the_library(app, config):
    panel = client_for(app).post("/api/theory", json=config).json()
    _, spec = check(config)
    ref = gp.theory.predict(spec)
    assert panel["applies"] is True
    assert panel["chi1"] == ref.chi1 and panel["phase"] == ref.phase
    assert panel["q_star"] == ref.q_star
    assert panel["xi_grad"] == (ref.xi_grad if math.isfinite(ref.xi_grad) else "inf")
    data = load_data(spec.data)  # the network's real input width and classes
    net = gp.theory.predict_network(spec, in_features=data.x_train.shape[1],
                                    n_outputs=data.n_classes)
    assert panel["log10_signal"] == pytest.approx(0.5 * net.path.log10_cumulative, abs=1e-12)
    d = panel["diagram"]
    assert d["activation"] == spec.net.activation.name
    assert min(d["sigma_w2"]) <= panel["point"]["sigma_w2"] <= max(d["sigma_w2"])


EXTREMES = [{"activation": a, "init": "normal", "sigma_w2": 10, "sigma_b2": 2, "depth": 100,
             "width": 1} for a in activation_names()] + \
    [{"activation": "relu", "init": i, "sigma_w2": 0.01, "depth": 2, "width": 512,
      "dataset": "parity"} for i in init_names()]


def test_no_configuration_breaks_the_theory_panel(app):
    client = client_for(app)
    for config in EXTREMES:
        response = client.post("/api/theory", json=config)
        assert response.status_code == 200, (config, response.text)
        panel = response.json()
        assert panel["applies"] or panel["reason"], config  # numbers, or why there are none


def test_batch_norm_gets_the_batch_norm_theory(app):
    panel = client_for(app).post("/api/theory", json={"depth": 10, "norm": "batch"}).json()
    assert panel["applies"] is True
    assert any("batch norm" in note for note in panel["notes"])
    assert panel["chi1"] > 1.0  # BN MLPs' gradients grow toward the input (Yang et al. 2019)


@pytest.mark.parametrize("change", [{"norm": "layer"}, {"residual": True}])
def test_theory_says_when_it_does_not_apply(app, change):
    panel = client_for(app).post("/api/theory", json={"depth": 10, **change}).json()
    assert panel["applies"] is False
    assert ("residual" if "residual" in change else "norm") in panel["reason"]
    assert "chi1" not in panel and "log10_signal" not in panel


@pytest.mark.parametrize("control,value,override", [
    ("depth", "abc", "net.depth=abc"),
    ("depth", 0, "net.depth=0"),
    ("lr", -1, "train.lr=-1"),
    ("activation", "swish9", "net.activation=swish9"),
    ("optimizer", "rmsprop", "train.optimizer=rmsprop"),
    ("residual", "maybe", "net.residual=maybe"),
])
def test_bad_values_get_the_cli_line(app, tmp_path, control, value, override):
    spec = tmp_path / "spec.yaml"
    spec.write_text("{}\n")
    cli = CliRunner().invoke(cli_app, ["run", str(spec), "--set", override,
                                       "--store", str(tmp_path / "cli.sqlite")])
    assert cli.exit_code == 2
    cli_line = cli.output.strip().removeprefix("error: ")
    client = client_for(app)
    for path in ("/api/theory", "/api/jobs"):
        body = {control: value} if path == "/api/theory" else {"config": {control: value}}
        response = client.post(path, json=body)
        assert response.status_code == 400
        assert response.json() == {"error": cli_line}


@pytest.mark.parametrize("config,needle", [
    ({"depth": 101}, "net.depth: must be from 1 to 100 in the playground"),
    ({"width": 513}, "net.width: must be from 1 to 512 in the playground"),
    ({"dataset": "npz"}, "the playground takes no files"),
    ({"dataset": "/etc/passwd"}, "the playground takes no files"),
    ({"sigma_w2": "nan"}, "sigma_w2: must be a number from"),
    ({"path": "x.npz"}, "unknown control 'path'"),
])
def test_playground_caps(app, config, needle):
    response = client_for(app).post("/api/theory", json=config)
    assert response.status_code == 400 and needle in response.json()["error"]
    assert "\n" not in response.json()["error"]


def test_malformed_and_huge_bodies_are_refused_and_the_server_lives_on(app):
    client = client_for(app)
    bad = client.post("/api/theory", content=b"{not json",
                      headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]
    assert client.post("/api/theory", json=[1, 2]).status_code == 400
    assert client.post("/api/jobs", json={"kind": "train", "extra": 1}).status_code == 400
    assert client.post("/api/jobs", json={"kind": "mine"}).status_code == 400
    huge = client.post("/api/theory", content=b"{" + b" " * 200_000 + b"}",
                       headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "larger than" in huge.json()["error"]
    assert client.get("/api/jobs/nope/events").status_code == 404
    form = client.post("/api/jobs", content=b'{"kind": "train"}',
                       headers={"content-type": "text/plain"})  # what a cross-site form sends
    assert form.status_code == 415 and "must be JSON" in form.json()["error"]
    assert client.get("/api/theory").status_code == 405
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/api/options").status_code == 200


def test_one_job_per_client_and_n_at_once(app):
    alice, bob = client_for(app), client_for(app)
    first = start(alice, LONG)
    assert first.status_code == 202
    again = start(alice, TINY)
    assert again.status_code == 409 and "one job per client" in again.json()["error"]
    full = start(bob, TINY)
    assert full.status_code == 429 and "slots of this server are busy" in full.json()["error"]
    assert bob.post(f"/api/jobs/{first.json()['job']}/stop", json={}).status_code == 403
    assert alice.get("/api/status").json()["running"] == 1
    assert alice.post(f"/api/jobs/{first.json()['job']}/stop", json={}).status_code == 200
    assert app.state.slots.get(first.json()["job"]).wait(60)
    later = start(bob, TINY)
    assert later.status_code == 202
    assert events(bob, later.json()["job"])[-2]["status"] == "complete"


def test_stop_ends_the_run_interrupted_in_the_store(app, tmp_path):
    client = client_for(app)
    job = start(client, LONG).json()["job"]
    while not any(e["type"] == "rows" for e in app.state.slots.get(job).events_since(0)):
        app.state.slots.get(job).wait(0.05)
    client.post(f"/api/jobs/{job}/stop", json={})
    got = events(client, job)
    result = next(e for e in got if e["type"] == "result")
    assert result["status"] == "interrupted" and result["summary"]["steps_run"] < 5000
    assert got[-1] == {"type": "end", "kind": "train", "cancelled": True,
                       "reason": "stopped from the page"}
    with Store(tmp_path / "runs.sqlite") as db:
        row = db.run(result["run_id"])
        stored = db.metrics(result["run_id"], "loss")
    assert row["status"] == "interrupted"
    assert len(stored) == result["summary"]["steps_run"]
    listing = CliRunner().invoke(cli_app, ["runs", "--store", str(tmp_path / "runs.sqlite")])
    assert result["run_id"] in listing.output and "interrupted" in listing.output


def test_a_finished_run_streams_what_gp_run_stores(app, tmp_path):
    client = client_for(app)
    got = events(client, start(client, TINY).json()["job"])
    result = next(e for e in got if e["type"] == "result")
    assert result["status"] == "complete"
    streamed = [r for e in got if e["type"] == "rows" for r in e["rows"]]
    _, spec = check(TINY)
    ref = gp.run(spec, store=":memory:").frame()
    for quantity in ("loss", "test_accuracy", "backward_signal_norm", "dead_unit_fraction"):
        mine = sorted((r[0], r[2], r[4]) for r in streamed if r[3] == quantity)
        theirs = ref[ref["quantity"] == quantity]
        assert mine == sorted(zip(theirs["step"], theirs["depth"], theirs["value"],
                                  strict=True)), quantity
    with Store(tmp_path / "runs.sqlite") as db:
        stored = db.metrics(result["run_id"])
    assert len(stored) == len(ref)  # every quantity is stored, not only the streamed ones


def test_diagnose_and_repair_stream_what_the_library_finds(app):
    client = client_for(app)
    config = {**TINY, "depth": 12, "steps": 10}
    got = events(client, start(client, config, "diagnose").json()["job"])
    _, spec = check(config)
    data = load_data(spec.data)
    model = build(spec.net, data.in_shape, data.n_classes, seed=0)
    diag = gp.diagnose(model, data, steps=10, lr=spec.train.lr, batch_size=32, seed=0)
    assert [e["kind"] for e in got if e["type"] == "finding"] == [f.kind for f in diag.findings]
    assert next(e for e in got if e["type"] == "diagnosis")["healthy"] == diag.healthy

    got = events(client, start(client, config, "repair").json()["job"])
    streamed = {e["row"]["candidate"]: e["row"]["verdict"] for e in got if e["type"] == "repair"}
    whole = gp.repair(model, data, budget_steps=10, lr=spec.train.lr, batch_size=32, seed=0)
    assert streamed == dict(zip(whole.table["candidate"], whole.table["verdict"], strict=True))
    best = next(e for e in got if e["type"] == "repaired")["best"]
    assert best == whole.best


def test_assets_come_from_the_package(app):
    from plotly.offline import get_plotlyjs

    client = client_for(app)
    assert client.get("/static/plotly.min.js").text == get_plotlyjs()
    page = client.get("/").text
    assert "http://" not in page and "https://" not in page
    for name in ("app.js", "style.css"):
        body = client.get(f"/static/{name}").text
        assert "http://" not in body and "https://" not in body
    options = client.get("/api/options").json()
    assert options["activations"] == activation_names()
    assert options["inits"] == init_names()
    for preset in options["presets"].values():
        check(preset)  # every preset is a valid configuration


def test_a_client_that_disconnects_mid_stream_cancels_its_job(tmp_path):
    import httpx

    from .conftest import serve, wait_until

    with serve(tmp_path / "live.sqlite", max_running=1) as live, \
            httpx.Client(base_url=live.url, timeout=30) as client:
        client.get("/")
        job_id = start(client, LONG).json()["job"]
        with client.stream("GET", f"/api/jobs/{job_id}/events") as response:
            for line in response.iter_lines():
                if line.startswith("event: rows"):
                    break  # leave mid-stream: the connection closes
        wait_until(lambda: live.running() == 0, 20, "the server to notice")
        assert live.app.state.slots.get(job_id).cancel_reason == "the page closed"
        assert start(client, TINY).status_code == 202  # the slot is free again


def test_a_job_nobody_watches_is_cancelled():
    from gradprobe.serve.jobs import Slots

    def work(job):
        while not job.cancelled:
            job.wait(0.01)

    job = Slots(1, orphan_s=0.2).start("me", "train", work)
    assert job.wait(10) and job.cancel_reason == "no page is watching"


def test_a_cancelled_diagnosis_stops_training_and_sends_no_findings():
    from gradprobe.serve.analysis import run_diagnose
    from gradprobe.serve.jobs import Job

    _, spec = check({**TINY, "depth": 12, "steps": 100})
    job = Job("me", "diagnose")
    job.cancel("stopped from the page")
    run_diagnose(job, spec)  # in this thread: stops after its first training step
    kinds = [e["type"] for e in job.events_since(0)]
    assert kinds == ["status"]
