"""Mean-field theory of batch normalisation (Yang et al. 2019): gradient growth at init.

A BN MLP ``h^l = W^l phi(BN(h^{l-1})) + b^l`` (``BN`` over a batch of ``B`` samples, biased
variance, affine weight 1 and bias 0 as at init) in the infinite-width limit. Its batch
covariance reaches a fixed point with one diagonal and one off-diagonal value (BSB1), so
per unit the normalised batch ``x = sqrt(B) G h / |G h|`` (``G = I - 11^T/B``) is uniform on
the sphere of radius ``sqrt(B)`` in the ``(B-1)``-dimensional subspace orthogonal to ``1``,
and ``|G h|^2 / (a - b)`` is chi-squared with ``B - 1`` degrees of freedom, independent of
it. Backward, with ``P = G - x x^T / B`` and ``D = diag(phi'(x))`` the batch-gradient
covariance ``Pi`` of one layer maps to ``E[c^2] sigma_w2 E_x[P D Pi D P]``, and its top
eigenvector is ``G`` (permutation symmetry), so the per-layer factor on ``|dL/dh^l|^2`` is::

    lambda(B) = B / (B - 3) * mu(B) / kappa(B)
    mu(B)     = E[d1^2] (1 - 1/B) + (E[d1 d2] - E[d1^2 x1^2] + E[d1 x1 d2 x2]) / B
    kappa(B)  = E[phi(x1)^2] - E[phi(x1) phi(x2)]                 (d = phi'(x))

with ``B / (B - 3) = B E[1 / chi2_{B-1}]``. Weight and bias variances cancel. Expectations
are over two coordinates of ``x``; they are computed by quadrature on the disk (polar, the
angle split where ``x1 = 0`` or ``x2 = 0``, Gauss-Legendre in each piece). As ``B -> inf``,
``x`` becomes i.i.d. N(0, 1) and ``lambda -> E[phi'(z)^2] / Var[phi(z)]``: ``pi / (pi - 1)``
~ 1.467 for ReLU.

Assumptions (docs/theory.md and docs/reproductions.md say where they break): width much
larger than the batch size (``n >> B``); the fixed point reached (inputs whose batch
covariance is already BSB1, e.g. i.i.d. Gaussian inputs, or enough layers); BN in training
mode with affine parameters at their init.

Example:
    >>> round(bn_gradient_growth("relu"), 4)
    1.4669
    >>> round(bn_gradient_growth("relu", batch_size=32), 3)
    1.522
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from gradprobe.errors import UserError
from gradprobe.theory.gaussian import Moments, moments
from gradprobe.theory.meanfield import SignalPath, _predict_moments
from gradprobe.theory.network import (
    NetworkInfo,
    NetworkPrediction,
    inspect_network,
    network_info,
)

MIN_BATCH = 4  # E[1 / chi2_{B-1}] is finite only for B - 1 > 2
# Simulations (docs/reproductions.md, yang2019) match lambda(B) to ~0.3% once width >= 2 B
# (width 1024 at batch 512), and run 0.5-1.5% low at width <= batch: a note below this ratio.
MIN_WIDTH_FOR_BATCH = 2
_RADIAL_NODES = 96
_ANGLE_NODES = 48


@dataclass(frozen=True)
class BatchNormGrowth:
    """Per-layer gradient growth of a BN MLP at init, and the pieces it is made of.

    ``growth`` is ``lambda(B)``, the factor ``|dL/dh^l|^2 / |dL/dh^{l+1}|^2`` between
    consecutive pre-normalisation layers; ``large_batch`` its ``B -> inf`` limit;
    ``batch_size`` None means that limit.
    """

    activation: str
    batch_size: int | None
    growth: float
    large_batch: float
    mu: float
    kappa: float
    mean_sq: float = math.nan  # E[phi(x1)^2]: the per-unit variance at the next BN's input
    mean_cross: float = math.nan  # E[phi(x1) phi(x2)]: its covariance across the batch
    d: float = math.nan  # E[phi'(x1)^2]
    nu: float = math.nan  # mu for a backward covariance proportional to I (from the head)

    @property
    def log10_per_layer(self) -> float:
        """``log10(growth)``: the slope of the cumulative log gradient over depth."""
        return math.log10(self.growth)


def _as_moments(activation: Any) -> Moments:
    return activation if isinstance(activation, Moments) else moments(activation)


def _large_batch(m: Moments) -> tuple[float, float]:
    """``(E[phi'(z)^2], Var[phi(z)])`` for z ~ N(0, 1), by the Gaussian quadrature."""
    one = np.array([1.0])
    d = float(m.D(one)[0])
    mean = float(m._e(m.phi, one)[0])
    var = float(m.V(one)[0]) - mean * mean
    return d, var


def var_inf_mean_sq(m: Moments) -> float:
    """``E[phi(z)^2]`` for z ~ N(0, 1)."""
    return float(m.V(np.array([1.0]))[0])


def _disk_nodes(batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes ``(x1, x2)`` and weights of the joint law of two coordinates of ``x``.

    Two unit vectors ``G e1``, ``G e2`` have Gram ``[[1-1/B, -1/B], [-1/B, 1-1/B]]``; in an
    orthonormal basis of their span the projection ``v`` of a uniform unit vector of the
    ``(B-1)``-dim subspace has density ``~ (1 - |v|^2)^(m - 1)``, ``m = (B - 3) / 2``, so
    ``t = |v|^2 ~ Beta(1, m)``: ``t = 1 - exp(-y / m)`` with ``y ~ Exp(1)``, and ``y = s^2``
    makes the radial integrand ``2 s exp(-s^2) f`` smooth on ``[0, 6]``.
    """
    b = float(batch_size)
    chol = np.linalg.cholesky(np.array([[1 - 1 / b, -1 / b], [-1 / b, 1 - 1 / b]]))
    m = (b - 3.0) / 2.0
    g, w = np.polynomial.legendre.leggauss(_RADIAL_NODES)
    s = 3.0 * (g + 1)
    w_r = 3.0 * w * 2 * s * np.exp(-s * s)
    rho = np.sqrt(-np.expm1(-s * s / m))
    kinks = np.mod([math.pi / 2, 3 * math.pi / 2, math.atan2(-chol[1, 0], chol[1, 1]),
                    math.atan2(-chol[1, 0], chol[1, 1]) + math.pi], 2 * math.pi)
    edges = np.unique(np.concatenate([[0.0, 2 * math.pi], kinks]))
    ga, wa = np.polynomial.legendre.leggauss(_ANGLE_NODES)
    thetas, w_t = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        thetas.append(lo + (hi - lo) * (ga + 1) / 2)
        w_t.append(wa * (hi - lo) / 2 / (2 * math.pi))
    theta, w_theta = np.concatenate(thetas), np.concatenate(w_t)
    v = np.stack([np.outer(rho, np.cos(theta)), np.outer(rho, np.sin(theta))])  # (2, R, T)
    x = math.sqrt(b) * np.einsum("ij,jrt->irt", chol, v)
    weight = np.outer(w_r, w_theta)
    return x[0].ravel(), x[1].ravel(), weight.ravel()


_CACHE: dict[tuple[str, int], dict[str, float]] = {}


def _finite(m: Moments, batch_size: int) -> dict[str, float]:
    """Expectations over two coordinates of ``x`` by quadrature (cached per activation, B).

    Keys: ``d`` = E[d1^2], ``dd`` = E[d1 d2], ``dx`` = E[d1^2 x1^2], ``dxdx`` =
    E[d1 x1 d2 x2], ``v`` = E[phi(x1)^2], ``c`` = E[phi(x1) phi(x2)].
    """
    key = (m.label, batch_size)
    if key not in _CACHE:
        x1, x2, w = _disk_nodes(batch_size)
        p1, p2 = m.phi(x1), m.phi(x2)
        d1, d2 = m.dphi(x1), m.dphi(x2)
        _CACHE[key] = {k: float(np.sum(w * f)) for k, f in (
            ("d", d1 * d1), ("dd", d1 * d2), ("dx", d1 * d1 * x1 * x1),
            ("dxdx", d1 * x1 * d2 * x2), ("v", p1 * p1), ("c", p1 * p2))}
    return _CACHE[key]


def bn_growth(activation: Any = "relu", batch_size: int | None = None) -> BatchNormGrowth:
    """The per-layer gradient growth ``lambda(B)`` of a BN MLP at init, with its parts.

    ``activation``: a registered name or :class:`~gradprobe.theory.gaussian.Moments`;
    ``batch_size`` None gives the large-batch limit ``E[phi'^2] / Var[phi]``.

    Example:
        >>> g = bn_growth("tanh", batch_size=128)
        >>> g.growth > g.large_batch > 1
        True
    """
    m = _as_moments(activation)
    d_inf, var_inf = _large_batch(m)
    if var_inf <= 0:
        raise UserError(f"{m.label}: phi(z) has no variance; batch norm growth is undefined")
    large = d_inf / var_inf
    if batch_size is None:
        mean = math.sqrt(max(var_inf_mean_sq(m) - var_inf, 0.0))
        return BatchNormGrowth(m.label, None, large, large, d_inf, var_inf,
                               mean_sq=var_inf_mean_sq(m), mean_cross=mean * mean, d=d_inf,
                               nu=d_inf)
    if int(batch_size) != batch_size or batch_size < MIN_BATCH:
        raise UserError(f"batch_size must be an integer >= {MIN_BATCH}, not {batch_size!r}")
    e = _finite(m, int(batch_size))
    b = float(batch_size)
    mu = e["d"] * (1 - 1 / b) + (e["dd"] - e["dx"] + e["dxdx"]) / b
    kappa = e["v"] - e["c"]
    return BatchNormGrowth(m.label, int(batch_size), b / (b - 3) * mu / kappa, large, mu, kappa,
                           mean_sq=e["v"], mean_cross=e["c"], d=e["d"],
                           nu=e["d"] * (1 - 1 / b) - e["dx"] / b)


def bn_gradient_growth(activation: Any = "relu", batch_size: int | None = None) -> float:
    """``lambda(B)``: the factor on ``|dL/dh|^2`` per BN layer, at init (see module doc).

    Example:
        >>> round(bn_gradient_growth("relu", 4096), 3)
        1.467
    """
    return bn_growth(activation, batch_size).growth


# ----------------------------------------------------------------------------------------------
# Whole networks: Linear -> BatchNorm1d -> activation blocks and a linear head


def _bn_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _BatchNorm)]


def _strip(model: nn.Module, names: list[str], problems: list[str]) -> nn.Module:
    """A copy of ``model`` without its batch-norm modules (each must sit in a Sequential)."""
    stripped = copy.deepcopy(model)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = stripped.get_submodule(parent_name) if parent_name else stripped
        if isinstance(parent, nn.Sequential):
            delattr(parent, child)
        else:
            problems.append(f"batch norm {name} outside an nn.Sequential")
    return stripped


def _module_problems(bns: list[tuple[str, nn.Module]]) -> list[str]:
    problems = []
    for name, m in bns:
        if not isinstance(m, nn.BatchNorm1d):
            problems.append(f"{name} ({type(m).__name__}): the theory covers BatchNorm1d in MLPs")
        elif not m.training:
            problems.append(f"{name} is in eval mode (running statistics, not the batch's)")
        elif m.affine and (bool((m.weight != 1).any()) or bool((m.bias != 0).any())):
            problems.append(f"{name}: affine weight/bias away from their init (1, 0)")
    return problems


def bn_network_prediction(
    model_or_spec: Any,
    *,
    batch_size: int | None = None,
    q0: float = 1.0,
    input_gap: float | None = None,
    in_features: int | None = None,
    n_outputs: int | None = None,
) -> NetworkPrediction | None:
    """The mean-field path of a BN MLP (module or spec with ``net.norm = batch``), else None.

    ``input_gap`` is the input batch's mean square minus its mean cross-sample product
    (``a - b`` of ``x x^T / n0``; default ``q0``, i.e. independent samples); ``batch_size``
    defaults to an experiment spec's ``train.batch_size``; None is the large-batch limit.
    Reasons the theory does not apply (BN in eval mode, moved affine parameters,
    BatchNorm2d, a BN-less hidden layer, anything plain theory refuses) are in
    ``info.problems``; the path is computed anyway.

    Example:
        >>> from gradprobe.spec import NetSpec
        >>> net = bn_network_prediction(NetSpec(depth=6, width=256, activation="relu",
        ...                                     init="he_normal", norm="batch"), batch_size=32)
        >>> round(float(net.path.chi[2]), 3), net.applies
        (1.522, True)
    """
    problems: list[str] = []
    if batch_size is None:
        batch_size = getattr(getattr(model_or_spec, "train", None), "batch_size", None)
    if isinstance(model_or_spec, nn.Module):
        bns = _bn_modules(model_or_spec)
        if not bns:
            return None
        problems += _module_problems(bns)
        info = inspect_network(_strip(model_or_spec, [n for n, _ in bns], problems))
        n_bn = len(bns)
    else:
        net = getattr(model_or_spec, "net", model_or_spec)
        if getattr(net, "norm", "none") != "batch":
            return None
        if getattr(net, "kind", "mlp") != "mlp":
            problems.append("net.kind cnn: the theory covers BN MLPs")
        info = network_info(net.model_copy(update={"norm": "none"}), in_features=in_features,
                            n_outputs=n_outputs)
        n_bn = len(info.layers) - 1
    problems = list(info.problems) + problems
    if n_bn != len(info.layers) - 1:
        problems.append(f"{n_bn} batch-norm layers for {len(info.layers) - 1} hidden layers; "
                        "the theory needs one after every hidden weight layer")
    notes = [f"batch norm: mean-field theory of Yang et al. 2019 at batch size "
             f"{batch_size if batch_size else 'inf'}; valid for widths >> batch size"]
    if info.widths and min(info.widths) < MIN_WIDTH_FOR_BATCH * (batch_size or math.inf):
        notes.append(f"a hidden width of {min(info.widths)} is not much larger than the batch: "
                     "measured factors run ~1% below the theory's (docs/reproductions.md)")
    info = NetworkInfo(info.layers, tuple(problems), tuple(info.notes) + tuple(notes),
                       info.sampled)
    return _bn_path(info, batch_size, q0, q0 if input_gap is None else input_gap)


def _bn_path(info: Any, batch_size: int | None, q0: float, gap0: float) -> NetworkPrediction:
    layers = info.layers
    n = len(layers)
    sw = np.array([lay.sigma_w2 for lay in layers])
    sb = np.array([lay.sigma_b2 for lay in layers])
    grow = [bn_growth(lay.activation or "linear", batch_size) for lay in layers[:-1]]
    scale = 1.0 if batch_size is None else batch_size / (batch_size - 3.0)
    q = np.empty(n)
    q[0] = sw[0] * q0 + sb[0]
    for i in range(1, n):
        q[i] = sw[i] * grow[i - 1].mean_sq + sb[i]
    gaps = [sw[0] * gap0] + [sw[i] * grow[i - 1].kappa for i in range(1, n - 1)]
    chi = np.array([sw[i + 1] / max(gaps[i], 1e-300) * scale
                    * (grow[i].nu if i == n - 2 else grow[i].mu) for i in range(n - 1)])
    d = np.array([g.d for g in grow])
    path = SignalPath(q=q, chi=chi, D=d, D2=np.full(n - 1, np.nan), notes=(
        "batch norm: the first factor assumes the input batch's covariance is already "
        "exchangeable; the head's assumes a loss gradient independent across samples",))
    hidden = layers[1:-1] if n > 2 else layers[:1]
    m = moments(layers[0].activation or "linear")
    base = _predict_moments(m, float(np.mean([h.sigma_w2 for h in hidden])),
                            float(np.mean([h.sigma_b2 for h in hidden])), q0, None)
    g = grow[min(1, len(grow) - 1)] if grow else bn_growth("linear", batch_size)
    a = float(np.mean(sw[1:-1] if n > 2 else sw[:1])) * g.mean_sq
    pred = dataclasses.replace(
        base, q_star=a, chi1=g.growth, c_star=g.mean_cross / g.mean_sq, chi_c=math.nan,
        q_slope=0.0, xi_q=0.0, xi_c=math.nan, xi_grad=-1.0 / math.log(g.growth),
        phase="chaotic", status="converged", depth=n, q_path=q, chi_path=chi,
        log10_grad_ratio=path.log10_grad_ratio,
        notes=("batch norm: gradients grow by chi1 per layer toward the input for any "
               "sigma_w2 (Yang et al. 2019)",) + path.notes)
    return NetworkPrediction(info=info, path=path, prediction=pred, q0=q0,
                             log_variance=math.nan)


def bn_batch_prediction(model: nn.Module, x: Any, q0: float) -> NetworkPrediction | None:
    """:func:`bn_network_prediction` for a module and the input batch ``x`` it will see."""
    if not _bn_modules(model):
        return None
    flat = x.detach().double().flatten(1)
    gram = flat @ flat.T / flat.shape[1]  # (B, B)
    b = gram.shape[0]
    off = (float(gram.sum()) - float(gram.diagonal().sum())) / max(b * (b - 1), 1)
    gap = float(gram.diagonal().mean()) - off
    return bn_network_prediction(model, batch_size=b if b >= MIN_BATCH else None, q0=q0,
                                 input_gap=gap)
