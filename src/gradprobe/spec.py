"""Experiment specs: what to build, what to train on, how to train.

Specs are pydantic models with unknown keys rejected. They load from YAML or JSON files, from
dicts, and take ``--set net.depth=30`` style overrides.

A choice that takes parameters is written as a name or a mapping::

    init: he_normal
    init: {name: normal, sigma_w2: 1.5}
    activation: {name: leaky_relu, slope: 0.1}

Example:
    >>> spec = load_spec({"net": {"depth": 20, "activation": "sigmoid"}})
    >>> spec.net.activation.name, spec.net.depth
    ('sigmoid', 20)
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gradprobe import limits
from gradprobe.autopilot.options import AutopilotSetting
from gradprobe.errors import UsageError, UserError
from gradprobe.nets.activations import get_activation
from gradprobe.nets.init import get_bias_init, get_init
from gradprobe.spec_params import check_params, yaml_load

DATASETS = (
    "digits", "breast_cancer", "wine", "iris",
    "teacher", "spirals", "circles", "parity",
    "npz", "csv", "idx",
)


def _no_bool(kind: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"must be {kind}, not {str(value).lower()}")
        return value

    return BeforeValidator(check)


Int = Annotated[int, _no_bool("an integer")]
Float = Annotated[float, _no_bool("a number")]
Seed = Annotated[int, _no_bool("an integer"), Field(ge=0, le=limits.MAX_SEED)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Choice(BaseModel):
    """A registry name plus its parameters; written as ``name`` or ``{name: ..., k: v}``."""

    model_config = ConfigDict(extra="allow", frozen=True)
    kind: ClassVar[str] = "choice"
    name: str

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            params = {k: v for k, v in value.items() if k != "name"}
            return {"name": value["name"], **check_params(cls.kind, value["name"], params)}
        return value

    @model_validator(mode="after")
    def _check(self) -> Choice:
        lookup = getattr(type(self), "lookup", None)
        if lookup is not None:  # the registry entry fills defaults and refuses unknowns
            lookup(self.name).resolve(self.params)
        return self

    @property
    def params(self) -> dict[str, Any]:
        """The parameters given beside the name."""
        return dict(self.model_extra or {})

    def as_tuple(self) -> tuple[str, dict[str, Any]]:
        """``(name, params)`` as the registries take it."""
        return self.name, self.params

    def label(self) -> str:
        """Short human label: ``normal(sigma_w2=1.5)``."""
        if not self.params:
            return self.name
        inner = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.name}({inner})"


class ActivationChoice(Choice):
    """An activation name from ``gradprobe.nets.activations`` with its parameters."""

    kind: ClassVar[str] = "activation"
    lookup: ClassVar[Callable[[str], Any]] = staticmethod(get_activation)


class InitChoice(Choice):
    """A weight init name from ``gradprobe.nets.init`` with its parameters."""

    kind: ClassVar[str] = "init"
    lookup: ClassVar[Callable[[str], Any]] = staticmethod(get_init)


class BiasInitChoice(Choice):
    """A bias init name (zeros, constant, normal, pytorch_default) with its parameters."""

    kind: ClassVar[str] = "bias_init"
    lookup: ClassVar[Callable[[str], Any]] = staticmethod(get_bias_init)


class NetSpec(_Strict):
    """The network: a plain MLP or CNN, with normalisation and residuals as switches.

    ``depth`` counts weight layers, the output layer included; ``width`` is one int or a
    list with one entry per hidden layer (``depth - 1`` entries).
    """

    kind: Literal["mlp", "cnn"] = "mlp"
    depth: Int = Field(10, ge=1, le=limits.MAX_DEPTH)
    width: Int | list[Int] = 64
    activation: ActivationChoice = ActivationChoice(name="tanh")
    init: InitChoice = InitChoice(name="xavier_normal")
    bias_init: BiasInitChoice = BiasInitChoice(name="zeros")
    norm: Literal["none", "batch", "layer"] = "none"
    residual: bool = False

    @field_validator("width")
    @classmethod
    def _positive_width(cls, value: int | list[int]) -> int | list[int]:
        widths = value if isinstance(value, list) else [value]
        if any(w < 1 or w > limits.MAX_WIDTH for w in widths):
            raise ValueError(f"width must be between 1 and {limits.MAX_WIDTH}")
        return value

    @model_validator(mode="after")
    def _width_list_length(self) -> NetSpec:
        if isinstance(self.width, list) and len(self.width) != self.depth - 1:
            raise ValueError(
                f"width list has {len(self.width)} entries; depth {self.depth} needs "
                f"{self.depth - 1} (one per hidden layer)"
            )
        return self

    def hidden_widths(self) -> list[int]:
        """One width per hidden layer (``depth - 1`` entries)."""
        if isinstance(self.width, list):
            return list(self.width)
        return [self.width] * (self.depth - 1)

    @property
    def plain(self) -> bool:
        """True when no remedy is switched on (no normalisation, no residuals)."""
        return self.norm == "none" and not self.residual

    def describe(self) -> str:
        """A label in words: ``20-layer sigmoid MLP, xavier_normal``."""
        extras = []
        if self.norm != "none":
            extras.append(f"{self.norm} norm")
        if self.residual:
            extras.append("residual")
        tail = f" + {' + '.join(extras)}" if extras else ""
        return (
            f"{self.depth}-layer {self.activation.label()} {self.kind.upper()}, "
            f"{self.init.label()}{tail}"
        )


class DataSpec(_Strict):
    """The dataset: a built-in one, a synthetic one, or a user file.

    Built-in: digits, breast_cancer, wine, iris (shipped by scikit-learn). Synthetic: teacher
    (labels from a random deep tanh net), spirals, circles, parity. Files: npz (arrays ``x``
    and ``y``), csv (label column ``target`` or the last), idx (MNIST-format images + labels).
    """

    name: Literal[
        "digits", "breast_cancer", "wine", "iris", "teacher", "spirals", "circles", "parity",
        "npz", "csv", "idx",
    ] = "digits"
    path: str | None = None
    labels_path: str | None = None  # idx: the labels file when ``path`` holds the images
    target: str | None = None  # csv: the label column (default: "target" if present, else last)
    n_samples: Int = Field(1000, ge=4, le=limits.MAX_SAMPLES)  # synthetic sets only
    n_features: Int = Field(16, ge=1, le=limits.MAX_FEATURES)  # teacher, parity
    n_classes: Int = Field(2, ge=2, le=limits.MAX_CLASSES)  # teacher, spirals
    noise: Float = Field(0.1, ge=0, le=1e6)  # spirals, circles
    teacher_depth: Int = Field(4, ge=1, le=limits.MAX_DEPTH)
    test_fraction: Float = Field(0.2, ge=0.0, lt=1.0)
    standardize: bool = True
    max_samples: Int | None = Field(None, ge=4, le=limits.MAX_SAMPLES)
    seed: Seed = 0

    @model_validator(mode="after")
    def _files_need_path(self) -> DataSpec:
        if self.name in ("npz", "csv", "idx") and not self.path:
            raise ValueError(f"data '{self.name}' needs a path")
        return self


class TrainSpec(_Strict):
    """Gradient-descent settings. ``sgd`` is plain gradient descent ``theta -= lr * grad``."""

    optimizer: Literal["sgd", "momentum", "adam"] = "sgd"
    lr: Float = Field(0.05, gt=0)
    momentum: Float = Field(0.9, ge=0, lt=1)
    steps: Int = Field(200, ge=0, le=limits.MAX_STEPS)
    batch_size: Int | None = Field(128, ge=1, le=limits.MAX_SAMPLES)  # None: full batch
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    seed: Seed = 0
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    record_every: Int = Field(10, ge=1)
    eval_every: Int = Field(25, ge=1)
    loss_threshold: Float | None = Field(None, gt=0)  # default: half the initial loss
    stall_window: Int = Field(50, ge=2)
    stall_tolerance: Float = Field(0.01, ge=0)  # relative improvement counted as progress
    autopilot: AutopilotSetting = False  # gradprobe.autopilot: true or a mapping of options


class ExperimentSpec(_Strict):
    """One experiment: ``net`` + ``data`` + ``train``, and a name for the run store."""

    name: str = "experiment"
    net: NetSpec = NetSpec()
    data: DataSpec = DataSpec()
    train: TrainSpec = TrainSpec()

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dict (round-trips through :func:`load_spec`)."""
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------------------
# Loading, overrides and readable errors


def read_mapping(source: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file into a dict (YAML with the safe loader)."""
    if not isinstance(source, str | Path):
        raise UsageError(f"a spec is a file path, a dict or a spec object, not "
                         f"{type(source).__name__}")
    path = Path(source)
    if not path.is_file():
        raise UserError(f"spec file not found: {path}")
    try:
        if path.stat().st_size > limits.MAX_SPEC_BYTES:
            raise UserError(f"{path}: a spec file may be at most {limits.MAX_SPEC_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (a spec is YAML or JSON)") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror})") from None
    if "\x00" in text:
        raise UserError(f"{path}: not a text file (a spec is YAML or JSON)")
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml_load(text)
    except (yaml.YAMLError, json.JSONDecodeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not valid {kind}: {first}") from None
    except RecursionError:
        raise UserError(f"{path}: not valid {kind}: nested too deeply") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: the spec must be a mapping, got {type(data).__name__}")
    limits.check_nodes(data, str(path))
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """``"net.depth=30"`` -> ``("net.depth", 30)``; the value is parsed as YAML."""
    if "=" not in text:
        raise UserError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"override {text!r} has an empty key")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, RecursionError):
        value = raw
    limits.check_nodes(value, f"override {key}")
    return key, value


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``key="a.b"``, creating mappings on the way.

    Setting ``net.init.sigma_w2`` on a choice written as a bare name turns it into a mapping.
    """
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if isinstance(child, str):  # a choice given by name gets parameters
            child = {"name": child}
        elif child is None:
            child = {}
        elif not isinstance(child, dict):
            raise UserError(f"cannot set {key!r}: {part!r} is not a mapping")
        node[part] = child
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted-path overrides applied."""
    data = copy.deepcopy(data)
    for key, value in override_items(overrides):
        set_dotted(data, key, value)
    return data


def override_items(overrides: Any) -> list[tuple[str, Any]]:
    """``(key, value)`` pairs from a dict or a list of ``"key=value"`` strings."""
    if isinstance(overrides, dict):
        if not all(isinstance(k, str) for k in overrides):
            raise UsageError("overrides: the keys of a dict must be dotted paths (strings)")
        return list(overrides.items())
    if isinstance(overrides, str | bytes) or not isinstance(overrides, list | tuple):
        raise UsageError(
            f"overrides must be a list of 'key.path=value' strings or a dict, not "
            f"{type(overrides).__name__} (e.g. overrides=[\"net.depth=4\"])"
        )
    if not all(isinstance(o, str) for o in overrides):
        raise UsageError("overrides: each item must be a 'key.path=value' string")
    return [parse_override(o) for o in overrides]


def format_validation_error(exc: ValidationError) -> str:
    """One line naming the field and what is allowed."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    msg = err["msg"].removeprefix("Value error, ")
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        msg = "unknown key"
        model = _model_at(loc)
        if model is not None:
            msg += f" (allowed: {', '.join(model.model_fields)})"
    elif kind == "literal_error":
        msg = msg.replace("Input should be", "must be one of")
    count = len(exc.errors())
    more = f" (and {count - 1} more problem{'s' if count > 2 else ''})" if count > 1 else ""
    return f"{loc}: {msg}{more}" if loc else f"{msg}{more}"


def _model_at(loc: str) -> type[BaseModel] | None:
    parts = loc.split(".")[:-1]
    model: type[BaseModel] = ExperimentSpec
    for part in parts:
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def load_spec(
    source: str | Path | dict[str, Any] | ExperimentSpec,
    overrides: list[str] | dict[str, Any] | None = None,
) -> ExperimentSpec:
    """Build an :class:`ExperimentSpec` from a file, a dict or a spec, plus overrides.

    Raises :class:`UserError` with one readable line on any problem.

    Example:
        >>> load_spec({"net": {"depth": 3}}, ["net.activation=relu"]).net.activation.name
        'relu'
    """
    if isinstance(source, ExperimentSpec):
        data = source.to_dict()
    elif isinstance(source, dict):
        limits.check_nodes(source, "spec")
        data = copy.deepcopy(source)
    else:
        data = read_mapping(source)
    if overrides is not None:
        data = apply_overrides(data, overrides)
    return validate_spec(data, ExperimentSpec)


def validate_spec(data: dict[str, Any], model: type[BaseModel]) -> Any:
    """Validate ``data`` against ``model``; problems become one-line :class:`UserError`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc)) from None
