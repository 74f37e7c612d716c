"""The theory's figures: drawn in report/ from what theory/ computed, never from a model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradprobe.measure import compare_model
from gradprobe.report import plot_comparison, plot_phase_diagram
from gradprobe.theory import phase_diagram

from ..theory.helpers import plain_mlp


def test_plot_takes_data_and_draws(tmp_path):
    data = phase_diagram("tanh", np.linspace(0.5, 3.5, 40), np.linspace(0.0, 0.3, 20))
    ax = plot_phase_diagram(data)
    assert ax.get_xlabel() == "sigma_w2" and ax.get_ylabel() == "sigma_b2"
    ax.figure.savefig(tmp_path / "phase.png")
    assert (tmp_path / "phase.png").stat().st_size > 1000
    # the critical line drawn is the computed one
    line = ax.get_lines()[0]
    ok = np.isfinite(data.critical_sigma_w2)
    np.testing.assert_allclose(line.get_xdata(), data.critical_sigma_w2[ok])


def test_plot_comparison_draws_computed_data(tmp_path):
    cmp = compare_model(plain_mlp(nn.Tanh, 1.5, 0.05, depth=10, width=128), torch.randn(32, 128))
    sd = cmp.frame["predicted_log10_sd"].to_numpy()
    assert sd[-1] == 0.0 and np.all(np.diff(sd) <= 0)  # spread accumulates toward the input
    ax = plot_comparison(cmp)
    ax.figure.savefig(tmp_path / "cmp.png")
    assert (tmp_path / "cmp.png").stat().st_size > 1000
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), cmp.frame["measured_log10_cum"])


def test_drawing_into_a_given_axes_returns_it():
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    data = phase_diagram("relu", np.linspace(1.0, 3.0, 5), np.array([0.0, 0.1]))
    assert plot_phase_diagram(data, ax=ax) is ax


def test_the_old_theory_names_say_where_drawing_went():
    import gradprobe.theory as theory

    with pytest.raises(AttributeError, match=r"moved to gradprobe\.report\.plot_phase_diagram"):
        theory.plot_phase_diagram  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        theory.nothing  # noqa: B018
