"""Probe: hook management, scheduling and the record.

The probe hooks a model's weight layers and activation modules on the steps it records,
leaves 0-d tensors ("primitives", see :mod:`gradprobe.probe.quantities`; plain floats where
the CPU's one-pass kernels took them, :mod:`gradprobe.probe.tensors`) while the forward and
backward passes run, and at :meth:`Probe.step` reads them back in one batch and turns them
into rows ``(step, layer, depth, quantity, value)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from gradprobe.errors import UserError
from gradprobe.probe import handlers as H
from gradprobe.probe.capture import ActKey, Capture
from gradprobe.probe.compiled import CompiledSwitch
from gradprobe.probe.coverage import Coverage, parameter_coverage
from gradprobe.probe.functional import Functional
from gradprobe.probe.params import Params
from gradprobe.probe.quantities import SATURATION_THRESHOLD, Quantity, select
from gradprobe.probe.rows import captures, step_rows
from gradprobe.probe.tensors import Value, read_back
from gradprobe.probe.updates import Updates

if TYPE_CHECKING:
    from gradprobe.probe.summary import Summary

FRAME_COLUMNS = ["step", "layer", "depth", "quantity", "value"]


class ProbeInUse(UserError):
    """A Probe entered (attached with ``with``) while already attached."""


class Probe(Capture, Updates, Functional, Params):
    """Measure, layer by layer, how the gradient shrinks or grows on its way to the input.

    Args:
        model: any ``nn.Module``. Weight layers (``nn.Linear``, ``nn.Conv1d/2d/3d``, HF's
            ``Conv1D`` and registered types) and embeddings are measured; activation
            modules, and activation functions called inside ``forward`` (``F.relu``,
            ``torch.sigmoid``, ...), get derivative statistics; normalisation layers the
            gradient norm of their affine parameters. A ``torch.compile``d model is
            measured through its original module, run eagerly on recorded steps
            (:mod:`gradprobe.probe.compiled`). :meth:`coverage` says which share of the
            trainable parameters this reaches.
        every: record every ``every``-th step (step ``t`` is recorded iff
            ``t % every == 0``, so step 0 always is).
        quantities: names of the quantities to record (default: all). Hooks that no
            requested quantity needs are not installed.
        on_unknown: ``"warn"`` (default) or ``"raise"`` for modules the probe cannot
            classify: modules that own parameters but have no handler, and parameter-free
            leaf modules between weight layers that are neither activations nor plumbing
            (see :mod:`gradprobe.probe.handlers`).
        saturation_threshold: an output of a bounded activation within this fraction of
            its output range from an asymptote counts as saturated (sigmoid: h < 0.05 or
            h > 0.95 at the default 0.05).

    Scheduling. Hooks are on the model only while a recorded step runs: on other steps the
    model runs exactly as without a probe (no hook is called). A step ends at
    :meth:`step`, which also decides whether to record it: ``t % every == 0``, or
    ``force=True``. Forward-time quantities (signals, activations) need the hooks before
    the forward pass, so to force-record a step completely announce it first with
    :meth:`force_next` (or ``begin_step(force=True)``); ``step(force=True)`` alone records
    the parameter quantities (gradient and weight norms) of a step that was not announced.
    ``recording`` says whether the step about to run will be recorded.

    What one step measures: the first grad-enabled forward call of each weight layer
    (later calls of a shared layer are ignored, with a warning) and the backward pass
    through it; parameter gradients as they stand at ``step()``. Forwards run with grad
    disabled (validation under ``torch.no_grad()``) are ignored.

    Example:
        >>> import torch, gradprobe as gp
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
        ...                             torch.nn.Linear(8, 1))
        >>> with gp.Probe(model) as probe:
        ...     model(torch.randn(16, 4)).pow(2).mean().backward()
        ...     probe.step()
        True
        >>> sorted(probe.frame().quantity.unique())[:3]
        ['backward_signal_norm', 'between_factor', 'bias_grad_norm']

    In a training loop (the trainer's side of the contract)::

        probe = Probe(model, every=10); probe.attach(); probe.watch(optimizer)
        for t in range(steps):
            if t == steps - 1:
                probe.force_next()          # record the last step in full
            loss_fn(model(x), y).backward()
            probe.step()                    # closes step t
            optimizer.step(); optimizer.zero_grad()
        probe.detach()
    """

    def __init__(
        self,
        model: nn.Module,
        every: int = 1,
        *,
        quantities: Sequence[str] | None = None,
        on_unknown: str = "warn",
        saturation_threshold: float = SATURATION_THRESHOLD,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Probe needs a torch.nn.Module, got {type(model).__name__}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        if on_unknown not in ("warn", "raise"):
            raise ValueError(f"on_unknown must be 'warn' or 'raise', got {on_unknown!r}")
        self._switch = CompiledSwitch(model)
        model = self._switch.original
        self.model = model
        self.every = every
        if not 0.0 < float(saturation_threshold) < 0.5:
            raise ValueError(
                f"saturation_threshold must be a fraction of the output range in (0, 0.5), "
                f"got {saturation_threshold!r}"
            )
        self.saturation_threshold = float(saturation_threshold)
        self._quantities: tuple[Quantity, ...] = select(
            list(quantities) if quantities is not None else None
        )
        self._needs = captures(self._quantities)

        parts = H.classify(model)
        # modules whose own parameters get one gradient norm -> the primitive's name
        self._norms = {m: "affine_sq" for _, m in parts["norms"]}
        self._norms.update({m: "own_sq" for _, m in parts["embedding_owners"]})
        self._static = {m for key in ("layers", "activations", "norms", "recurrent",
                                      "embedding_owners") for _, m in parts[key]}
        self._norm_ran: set[nn.Module] = set()
        self._recurrent = [m for _, m in parts["recurrent"]]
        self._names: dict[nn.Module, str] = {}
        self._layer_h: dict[nn.Module, H.LayerHandler] = {}
        self._act_h: dict[nn.Module, H.ActivationHandler] = {}
        self._sat_levels: dict[nn.Module, tuple[float, float]] = {}  # bounded: (low, high)
        for name, m in parts["layers"]:
            self._names[m] = name or "model"
            self._layer_h[m] = H.layer_handler(m)
        for name, m in parts["norms"] + parts["embedding_owners"]:
            self._names[m] = name or "model"
        for name, m in parts["activations"]:
            self._names[m] = name or "model"
            self._act_h[m] = handler = H.activation_handler(m)
            levels = handler.saturation_levels(m, self.saturation_threshold)
            if levels is not None:
                self._sat_levels[m] = levels
        #: ``(qualified name, type name)`` of modules the probe cannot classify.
        self.unknown_layers: list[tuple[str, str]] = [
            (name or "model", type(m).__name__) for name, m in parts["unknown"]
        ]
        if self.unknown_layers:
            listed = ", ".join(f"{n} ({t})" for n, t in self.unknown_layers)
            msg = (
                f"gradprobe: no handler for module(s) {listed}; they are not measured. "
                "Register one with gradprobe.probe.register_layer / "
                "register_activation_module / register_between, or a catalogue entry "
                "(gradprobe.nets.activations.register_activation)."
            )
            if on_unknown == "raise":
                raise ValueError(msg)
            warnings.warn(msg, stacklevel=2)
        if not self._layer_h:
            raise ValueError(
                f"{type(model).__name__} has no weight layers (Linear, Conv1d/2d/3d or a "
                "registered type) for the probe to measure"
            )

        self._attached = False
        self._entered = False
        self._installed = False
        self._module_hooks: list[RemovableHandle] = []
        self._optimizers: list[torch.optim.Optimizer] = []
        self._opt_hooks: list[RemovableHandle] = []
        self._step = 0
        self._force_next = False
        self._last_closed_recorded = False
        self._closed_since: set[int] = set()  # optimizers with a probe.step() since theirs
        self._last_update_step: dict[int, int] = {}  # optimizer -> step of its last update
        self._depth: dict[nn.Module, int] = {}  # weight layer -> order of first call
        self._rows: list[tuple[int, str, int, str, float]] = []
        self._recorded_steps: list[int] = []
        # queued for rows, in order: ("step", step, primitives, activation keys) and
        # ("update", step, layer, |W_after - W_before|, |W_before|) (tensors until read back)
        self._pending: list[tuple[Any, ...]] = []
        self._open_updates: list[int] = []  # indices in _pending still holding tensors
        self._snapshots: dict[int, tuple[Any, ...]] = {}  # optimizer -> weights before
        self._snap_bufs: dict[int, torch.Tensor] = {}  # id(weight) -> snapshot buffer
        # id(weight) -> (version, |W|**2, whether copied into its snapshot buffer, weight)
        # as taken at the last recorded probe.step()
        self._w_sq: dict[int, tuple[int, Value, bool, torch.Tensor]] = {}
        self._grad_sq = {}  # id(parameter) -> (its .grad, version, |grad|**2) at accumulation
        self._warned_shared = False
        self._warned_blind = False
        # weight layer -> whether the node of its output consumes its input directly
        # (learned on its first recorded step; see _layer_pre)
        self._direct: dict[nn.Module, bool] = {}
        self._feeds_relu: set[nn.Module] = set()
        self._node_hooks: dict[nn.Module, Any] = {}
        self._gin_via_node = "grad_in" in self._needs
        self._init_params()
        self._init_functional()
        self._reset_step_state()

    # ------------------------------------------------------------------ lifecycle

    def attach(self) -> Probe:
        """Put the probe on the model (idempotent). Returns ``self``."""
        if not self._attached:
            self._attached = True
            for opt in self._optimizers:
                self._hook_optimizer(opt)
            self._sync_hooks()
        return self

    def detach(self, warn: bool = True) -> None:
        """Remove every hook the probe put on the model and optimizers (idempotent).

        ``warn=False``: a step captured but never closed (a diverged loss, whose backward
        never ran) is dropped without the warning."""
        if warn and self._attached and self._keys:
            warnings.warn(
                f"gradprobe: step {self._step} was captured but not closed with "
                "probe.step(); its measurements are dropped",
                stacklevel=2,
            )
        self._attached = False
        self._uninstall()
        for h in self._opt_hooks:
            h.remove()
        self._opt_hooks.clear()
        self._snapshots.clear()
        self._snap_bufs.clear()
        self._w_sq.clear()
        self._reset_step_state()

    def __enter__(self) -> Probe:
        if self._entered:
            raise ProbeInUse(
                "this Probe is already in a `with` block; use it in one `with` at a time "
                "(or a second Probe)"
            )
        self._entered = True
        return self.attach()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._entered = False
        self.detach(warn=exc_type is None)  # on an exception, no warning about the step

    @property
    def attached(self) -> bool:
        """Whether the probe is on the model."""
        return self._attached

    def watch(self, optimizer: torch.optim.Optimizer) -> Probe:
        """Measure ``update_to_weight_ratio`` on the steps of ``optimizer``.

        Snapshots the weight layers' weights before each optimizer step that applies the
        gradient of a recorded step, and compares after it. The update is attributed to
        the step whose gradient it applies, whether ``optimizer.step()`` runs after
        ``probe.step()`` (the trainer's order), before it (then on a recorded step the
        probe has seen the open step's forward), or wraps the whole step as Lightning's
        closure does.
        """
        if not any(o is optimizer for o in self._optimizers):
            self._optimizers.append(optimizer)
            if self._attached:
                self._hook_optimizer(optimizer)
        return self

    # ------------------------------------------------------------------ scheduling

    @property
    def recording(self) -> bool:
        """True iff the step about to run (or running) is recorded with its hooks."""
        return self._force_next or self._step % self.every == 0

    @property
    def step_index(self) -> int:
        """Index of the open step (the number of ``step()`` calls so far)."""
        return self._step

    def force_next(self) -> None:
        """Record the open step in full even if ``step % every != 0``; call before forward."""
        self._force_next = True
        self._sync_hooks()

    def begin_step(self, force: bool = False) -> None:
        """Optional announcement before a step's forward; ``force=True`` = :meth:`force_next`."""
        if force:
            self.force_next()

    def end_micro_batch(self) -> None:
        """Mark the end of a micro-batch inside the open step (gradient accumulation).

        Later forwards in the step are not captured and are not taken for weight sharing:
        the step's signals and activation rows are those of its first micro-batch, its
        weight-gradient rows those of the accumulated gradient read at :meth:`step`.
        """
        self._micro_done = True

    def step(self, force: bool = False) -> bool:
        """Close the open step, recording it if scheduled (or ``force``). Returns whether."""
        if not self._attached:
            raise RuntimeError("probe is not attached: use `with Probe(model)` or .attach()")
        recorded = self.recording or force
        if recorded:
            self._record(self._step)
        self._last_closed_recorded = recorded
        self._closed_since = {id(o) for o in self._optimizers}
        self._step += 1
        self._force_next = False
        self._reset_step_state()
        self._sync_hooks()
        return recorded

    # ------------------------------------------------------------------ results

    @property
    def layers(self) -> list[tuple[int, str, str]]:
        """``(depth, qualified name, module type)`` per weight layer seen, by depth."""
        rank = self._depth_ranks()
        return [(rank[d], self._names[m], type(m).__name__)
                for m, d in sorted(self._depth.items(), key=lambda kv: rank[kv[1]])]

    @property
    def recorded_steps(self) -> list[int]:
        """Indices of the recorded steps."""
        return list(self._recorded_steps)

    def rows(self, start: int = 0) -> list[tuple[int, str, int, str, float]]:
        """Record rows ``(step, layer, depth, quantity, value)`` from index ``start`` on,
        in the order they were recorded (for incremental logging)."""
        self._materialize()
        return self._rows[start:]

    def frame(self) -> pd.DataFrame:
        """The record, one row per (step, layer, quantity).

        Columns exactly ``step, layer, depth, quantity, value``; sorted by step.
        """
        df = pd.DataFrame(self.rows(), columns=FRAME_COLUMNS)
        df = df.astype({"step": "int64", "depth": "int64", "value": "float64"})
        return df.sort_values("step", kind="stable").reset_index(drop=True)

    def summary(self, step: int | None = None) -> Summary:
        """Per-layer table and network figures of one recorded step (default: the last).

        Returns a :class:`gradprobe.probe.summary.Summary` (``.table``, ``.figures``,
        ``.to_dict()``, printable with ``print`` or rich).
        """
        from gradprobe.probe.summary import summarize

        notes = [f"no handler for {n} ({t}): not measured" for n, t in self.unknown_layers]
        return summarize(self.frame(), step=step, layers=self.layers, notes=notes,
                         coverage=self.coverage())

    def coverage(self) -> Coverage:
        """The fraction of the model's trainable parameter elements whose module is measured
        (:mod:`gradprobe.probe.coverage`): once a step was recorded, the weight layers and
        normalisation layers that ran in a recorded forward pass; before, every module the
        probe knows how to measure.

        Example:
            >>> gp.Probe(torch.nn.Linear(3, 2)).coverage().fraction   # doctest: +SKIP
            1.0
        """
        if not self._recorded_steps:
            return parameter_coverage(self.model, self._static)
        ran = set(self._depth) | self._norm_ran
        kept = {m for m in self._static if not (m in self._layer_h or m in self._norms)}
        return parameter_coverage(self.model, ran | kept)

    def __repr__(self) -> str:
        state = "attached" if self._attached else "detached"
        return (
            f"Probe({type(self.model).__name__}, every={self.every}, {state}, "
            f"layers={len(self._layer_h)}, recorded={len(self._recorded_steps)})"
        )

    # ------------------------------------------------------------------ hooks

    def _sync_hooks(self) -> None:
        if self._attached and self.recording:
            self._install()
        else:
            self._uninstall()

    def _install(self) -> None:
        if self._installed:
            return
        self._switch.eager()
        hooks = self._module_hooks
        if "params" in self._needs:
            hooks += [m.register_forward_pre_hook(self._norm_pre) for m in self._norms]
            hooks += self._grad_hooks()
        if "activation" in self._needs:
            hooks += self._functional_hooks()
        for m in self._layer_h:
            hooks.append(m.register_forward_pre_hook(self._layer_pre))
            hooks.append(m.register_forward_hook(self._layer_post))
        if "activation" in self._needs:
            for m, h in self._act_h.items():
                if h.binary:
                    hooks.append(m.register_forward_hook(self._relu_post))
                else:
                    hooks.append(m.register_forward_pre_hook(self._act_pre))
        self._installed = True

    def _uninstall(self) -> None:
        for h in self._module_hooks:
            h.remove()
        self._module_hooks.clear()
        self._grad_sq = {}
        self._switch.restore()
        self._installed = False

    def _reset_step_state(self) -> None:
        self._seen: set[Any] = set()  # weight layers / activation keys captured this step
        self._open: set[nn.Module] = set()  # weight layers between pre- and post-hook
        self._cur_depth = 0  # depth of the last weight layer entered in this forward
        self._tensors: list[torch.Tensor] = []  # 0-d primitives, read back at step()
        self._keys: list[tuple[Any, str]] = []  # (layer or activation key, primitive)
        self._host: dict[Any, dict[str, float]] = {}  # primitives known on the host
        self._act_keys: list[ActKey] = []  # activation and normalisation keys, in order
        self._norm_keys: list[ActKey] = []
        self._gin_edge: dict[nn.Module, tuple[Any, int]] = {}  # layer -> its input's edge
        self._micro_done = False  # end_micro_batch() called: capture ended for this step
        self._counted = self._last_out = None  # see Capture._forward_sums

    # ------------------------------------------------------------------ recording

    def _record(self, step: int) -> None:
        """Read the step's primitives back (one batch, with any update norms still on the
        device) and queue them; rows are built later, when someone asks (``rows``)."""
        if self._installed and not any(m in self._seen for m in self._layer_h):
            self._warn_nothing_seen(step)
        if "params" in self._needs:
            self._capture_params()
        n_step = len(self._tensors)
        tensors = self._tensors + [t for i in self._open_updates for t in self._pending[i][3:]]
        values = read_back(tensors)
        self._resolve_updates(values[n_step:])
        prims = self._host  # this step's own (a new one after step()): no copy needed
        for (key, name), v in zip(self._keys, values[:n_step], strict=True):
            prims.setdefault(key, {})[name] = v
        self._pending.append(("step", step, prims, self._act_keys))
        self._recorded_steps.append(step)

    def _materialize(self) -> None:
        """Turn queued steps and updates into rows, in the order they happened."""
        if self._open_updates:
            tensors = [t for i in self._open_updates for t in self._pending[i][3:]]
            self._resolve_updates(read_back(tensors))
        for item in self._pending:
            if item[0] == "step":
                self._emit(item[1], item[2], item[3])
            else:
                self._emit_update(*item[1:])
        self._pending.clear()

    def _emit(
        self, step: int, prims: dict[Any, dict[str, float]], act_keys: list[ActKey]
    ) -> None:
        prims, act_keys, layer_at = self._ranked(prims, act_keys)
        self._rows += step_rows(step, prims, act_keys, layer_at, self._names, self._quantities)
