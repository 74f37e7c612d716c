"""The "Adaptive remedy" section draws the stored numbers of the autopilot runs."""

import gradprobe as gp
from gradprobe.autopilot import records as R
from gradprobe.report.adaptive import adaptive_section
from gradprobe.report.content import FigureSpec, TableSpec
from gradprobe.report.data import load_records
from gradprobe.store import Store

from ..conftest import tiny_spec


def test_section_shows_plain_autopilot_and_remedies_from_the_store(store_path):
    base = {"net.activation": "sigmoid", "net.init": "xavier_normal", "net.depth": 5,
            "train.steps": 20, "train.record_every": 5}
    ids = {
        "plain": gp.run(tiny_spec(**base), store=store_path).run_id,
        "auto": gp.run(tiny_spec(**base, **{"train.autopilot": {"every": 5}}),
                       store=store_path).run_id,
        "relu": gp.run(tiny_spec(**{**base, "net.activation": "relu",
                                    "net.init": "he_normal"}), store=store_path).run_id,
    }
    with Store(store_path) as db:
        records = {k: load_records(db, runs=[v])[0] for k, v in ids.items()}
        lr_rows = db.metrics(ids["auto"], R.LR_SCALE)
        signal = db.metrics(ids["auto"], "backward_signal_norm")
    groups = {"activations": [records["plain"], records["relu"]], "adaptive": [records["auto"]]}
    section = adaptive_section(groups)
    assert section is not None and section.title == "7. Adaptive remedy"
    table = next(b for b in section.blocks if isinstance(b, TableSpec))
    assert table.frame["run"].tolist() == [ids["plain"], ids["auto"], ids["relu"]]
    assert table.frame["label"].iloc[1].endswith(", autopilot")
    figs = {b.slug: b for b in section.blocks if isinstance(b, FigureSpec)}
    timeline = figs["autopilot-timeline"].data["cells"]
    assert sorted(timeline["value"]) == sorted(lr_rows["value"])
    flow = next(f for f in figs.values() if f.kind == "gradient_flow").data["flow"]
    mine = flow[flow["run"] == ids["auto"]].sort_values("depth")["value"].tolist()
    assert mine == signal[signal["step"] == 0].sort_values("depth")["value"].tolist()
    notes = [b for b in section.blocks if isinstance(b, TableSpec)][-1]
    assert "init" in set(notes.frame["action"])


def test_no_autopilot_runs_no_section():
    assert adaptive_section({"activations": [], "adaptive": []}) is None
