"""One entry point for predictions: an activation, a model or a spec.

:func:`gradprobe.theory.meanfield.predict` knows activations and variances; the network
reader (:mod:`gradprobe.theory.network`) builds on it. This module sits above both, so
neither imports the other in a circle.

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
from gradprobe.theory import meanfield
from gradprobe.theory.meanfield import Prediction, is_network
from gradprobe.theory.network import predict_network


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
