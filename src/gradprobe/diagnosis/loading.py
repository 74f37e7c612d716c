"""Loading a user's model for the command line: a factory in a Python file, plus weights.

* ``path/to/file.py:factory``: the file is imported (it is the user's own code, run at their
  request) and ``factory()`` must return an ``nn.Module``.
* weights: ``--checkpoint ckpt.pt`` (or the architecture given as ``--arch file.py:factory``
  and the checkpoint as the target) holds a ``state_dict`` saved with ``torch.save``, read
  with ``torch.load(weights_only=True)``, so arbitrary pickled objects are never run. A
  TorchScript archive is accepted as a source of weights too (its ``state_dict()``); it
  cannot be diagnosed on its own, because the probe needs eager modules to hook.

Every failure is a :class:`UserError` (exit code 2 in the CLI).

Example:
    >>> model, label = load_model("examples/nets.py:deep_sigmoid")   # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradprobe.errors import UserError
from gradprobe.limits import MAX_SEED

_STATE_KEYS = ("state_dict", "model_state_dict", "model")


def _split_factory(text: str) -> tuple[Path, str] | None:
    if ":" not in text:
        return None
    path, name = text.rsplit(":", 1)
    if not path.endswith(".py"):
        return None
    return Path(path), name


def load_factory(text: str, seed: int = 0) -> nn.Module:
    """Import ``file.py`` and call its ``factory()``; the result must be an ``nn.Module``.

    ``torch.manual_seed(seed)`` runs first, so a factory that draws its weights from torch's
    global generator gives the same model on every call.
    """
    parsed = _split_factory(text)
    if parsed is None:
        raise UserError(f"{text!r} is not file.py:factory")
    path, name = parsed
    if not name.isidentifier():
        raise UserError(f"{text!r}: {name!r} is not a Python function name")
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    module_name = f"gradprobe_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"{path}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(path.parent.resolve()))  # so the file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # the user's code: any failure is their problem
        sys.modules.pop(module_name, None)
        raise UserError(f"{path}: importing it failed: {_failure(exc)}") from None
    finally:
        sys.path.remove(str(path.parent.resolve()))
    factory = getattr(module, name, None)
    if factory is None:
        found = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                 and getattr(v, "__module__", None) == module_name]
        raise UserError(f"{path} has no {name!r} (functions there: {', '.join(found) or 'none'})")
    if not callable(factory):
        raise UserError(f"{path}: {name!r} is not callable")
    torch.manual_seed(seed)
    try:
        model = factory()
    except (Exception, SystemExit) as exc:
        raise UserError(f"{path}:{name}() failed: {_failure(exc)}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"{path}:{name}() returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _failure(exc: BaseException) -> str:
    """One line for an exception raised by user code (``sys.exit`` included)."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files holding ``constants.pkl``; torch.save files do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") for n in archive.namelist())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from a ``torch.save`` file (``weights_only=True``) or a TorchScript archive."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit's deprecation notice
                script = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise UserError(f"{path}: not a loadable TorchScript archive ({exc})") from None
        return dict(script.state_dict())
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{path}: not a state_dict loadable with weights_only=True ({first[:160]}); "
            "gradprobe never unpickles arbitrary objects"
        ) from None
    if isinstance(loaded, Mapping):
        for key in _STATE_KEYS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise UserError(f"{path}: expected a state_dict (names -> tensors), got "
                        f"{type(loaded).__name__}")
    return dict(loaded)


def load_model(
    target: str, checkpoint: str | Path | None = None, arch: str | None = None, seed: int = 0
) -> tuple[nn.Module, str]:
    """``(model, label)`` from the CLI's target, ``--checkpoint`` and ``--arch``."""
    if arch is not None:
        if checkpoint is not None:
            raise UserError("give the checkpoint either as the target or as --checkpoint, not both")
        if _split_factory(target) is not None:
            raise UserError("with --arch the target must be a checkpoint file, not file.py:factory")
        factory_text, checkpoint = arch, target
    elif _split_factory(target) is not None:
        factory_text = target
    else:
        path = Path(target)
        if not path.is_file():
            raise UserError(f"model not found: {target!r} (give file.py:factory, or a checkpoint "
                            "with --arch file.py:factory)")
        raise UserError(
            f"{target}: a checkpoint alone cannot be diagnosed; give its architecture with "
            "--arch file.py:factory (a state_dict or TorchScript file is then loaded into it)"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed must be an integer between 0 and {MAX_SEED}, not {seed!r}")
    model = load_factory(factory_text, seed)
    label = factory_text.rsplit(":", 1)[1]
    if checkpoint is not None:
        state = read_state_dict(checkpoint)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            detail = " ".join(line.strip() for line in first[:3])
            raise UserError(f"{checkpoint} does not fit {factory_text}: {detail[:300]}") from None
        label += f" + {Path(checkpoint).name}"
    return model, label
