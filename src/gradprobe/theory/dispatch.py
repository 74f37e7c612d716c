"""One entry point for predictions: an activation, a model or a spec.

:func:`gradprobe.theory.meanfield.predict` knows activations and variances; the network
reader (:mod:`gradprobe.theory.network`) builds on it, and the batch-norm theory
(:mod:`gradprobe.theory.batchnorm`) on that. This module sits above all three, so none
imports another in a circle.

Example:
    >>> from gradprobe.spec import NetSpec
    >>> predict("tanh", 1.5, 0.05).phase
    'ordered'
    >>> predict(NetSpec(depth=20, width=256, activation="tanh", init="xavier_normal")).depth
    20
"""

from __future__ import annotations

from typing import Any

from gradprobe.errors import UserError
from gradprobe.theory import meanfield, network
from gradprobe.theory.batchnorm import bn_network_prediction
from gradprobe.theory.meanfield import Prediction, is_network
from gradprobe.theory.network import NetworkPrediction


def predict_network(
    model_or_spec: Any, *, batch_size: int | None = None, **options: Any
) -> NetworkPrediction:
    """:func:`gradprobe.theory.network.predict_network` (``options``: ``q0``,
    ``in_features``, ``n_outputs``), with BN MLPs predicted too.

    A BN MLP (module or spec with ``net.norm = batch``) goes to
    :func:`gradprobe.theory.batchnorm.bn_network_prediction` at ``batch_size`` (default: an
    experiment spec's ``train.batch_size``; None is the large-batch limit).

    Example:
        >>> from gradprobe.spec import NetSpec
        >>> net = predict_network(NetSpec(depth=6, width=256, activation="relu",
        ...                               init="he_normal", norm="batch"), batch_size=32)
        >>> net.applies, round(float(net.path.chi[2]), 3)
        (True, 1.522)
    """
    if options.get("depth") is not None:
        raise UserError("depth comes from the model or spec; do not pass it")
    bn = bn_network_prediction(model_or_spec, batch_size=batch_size,
                               q0=network.checked_q0(options.get("q0")),
                               in_features=options.get("in_features"),
                               n_outputs=options.get("n_outputs"))
    if bn is None:
        return network.predict_network(model_or_spec, **options)
    if bn.info.problems:
        raise UserError(f"mean-field theory does not apply: {bn.info.reason}")
    return bn


def predict(activation: Any, sigma_w2: float | None = None, sigma_b2: float | None = None,
            depth: int | None = None, q0: float | None = None, **options: Any) -> Prediction:
    """Mean-field prediction for an activation and variances, an ``nn.Module`` or a spec.

    A name or scalar callable goes to :func:`gradprobe.theory.meanfield.predict` (see there
    for the arguments; ``options``: ``params``, ``kinks``, ``method``); a module (variances
    read off its tensors) or a spec to :func:`gradprobe.theory.network.predict_network`,
    whose ``.prediction`` is returned.

    Example:
        >>> p = predict("relu", sigma_w2=2.0, sigma_b2=0.0, depth=50)
        >>> p.phase, p.xi_grad, p.log10_grad_ratio
        ('critical', inf, 0.0)
    """
    if not is_network(activation):
        return meanfield.predict(activation, sigma_w2, sigma_b2, depth, q0, **options)
    if sigma_w2 is not None or sigma_b2 is not None or options:
        raise UserError(
            "sigma_w2, sigma_b2 and activation options come from the model or spec; "
            "do not pass them"
        )
    return predict_network(activation, depth=depth, q0=q0).prediction
