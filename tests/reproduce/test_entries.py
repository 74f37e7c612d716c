"""Every entry's --quick run reproduces its paper's claims (the verdicts are the test)."""

from __future__ import annotations

import json
import math

import pytest

from gradprobe.reproduce import names, reproduce

SLOW = {"schoenholz2017", "pennington2017", "he2015", "saxe2014"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names()])
def test_quick_run_reproduces_every_claim(name):
    rep = reproduce(name, quick=True)
    assert rep.claims, name
    failed = [c for c in rep.claims if not c.ok]
    assert not failed, failed
    for c in rep.claims:  # paper beside measured, with a stated tolerance
        assert c.tolerance and c.claim
        assert isinstance(c.measured, str) or math.isfinite(c.measured)
    record = json.loads(json.dumps(rep.as_record()))  # JSON-ready, figure included
    assert record["figure"]["series"] and record["quick"] is True
    assert rep.scale and rep.citation
