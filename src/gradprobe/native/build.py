"""Compile gradprobe's C kernels with the machine's C compiler, once, and cache the library.

The kernels are plain C (no Python or torch headers), so a build takes a fraction of a
second. The library is compiled for the CPU it runs on (``-march=native``) and cached under
:func:`cache_dir`, keyed by the source, the compiler, the flags and this CPU, so a home
directory shared between different machines never loads code built for another CPU. A
build writes to a temporary name and renames it into place, so concurrent processes (test
workers, Ray workers) never load a half-written file.

Anything that goes wrong (no compiler, a failed build, ``GRADPROBE_NATIVE=0``) leaves
:func:`load` returning None with the reason in :func:`unavailable_reason`; callers then use
torch's own kernels.

Example:
    >>> lib = load()
    >>> lib is None or hasattr(lib, "gradprobe_tanh_f32")
    True
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

SOURCES = ("tanh.c",)
FLAGS = ("-O3", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC")
TUNING = ("-march=native", "-fopenmp")  # tried with both, then without OpenMP, then neither
BUILD_TIMEOUT_S = 120

_reason: str | None = None


def unavailable_reason() -> str | None:
    """Why :func:`load` gave None (None when the library loaded or was not tried yet)."""
    return _reason


@functools.cache
def load() -> ctypes.CDLL | None:
    """The compiled kernel library, built on first use; None when it cannot be had."""
    global _reason
    if os.environ.get("GRADPROBE_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        _reason = "disabled by GRADPROBE_NATIVE=0"
        return None
    compiler = find_compiler()
    if compiler is None:
        _reason = "no C compiler found (set CC, or install gcc or clang)"
        return None
    source = "".join((Path(__file__).parent / name).read_text() for name in SOURCES)
    try:
        path = _build(compiler, source)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as err:
        _reason = f"could not build the C kernels: {str(err).splitlines()[0][:200]}"
        return None
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    lib.gradprobe_tanh_f32.argtypes = [pointer, pointer, size]
    lib.gradprobe_bias_tanh_f32.argtypes = [pointer, pointer, pointer, size, size, size]
    for kernel in (lib.gradprobe_tanh_f32, lib.gradprobe_bias_tanh_f32):
        kernel.restype = None
    _reason = None
    return lib


def find_compiler() -> str | None:
    """``$CC``, else the compiler Python was built with, else cc, gcc or clang on PATH."""
    candidates = [os.environ.get("CC", ""), (sysconfig.get_config_var("CC") or "").split(" ")[0],
                  "cc", "gcc", "clang"]
    for name in candidates:
        found = shutil.which(name) if name else None
        if found:
            return found
    return None


def cache_dir() -> Path:
    """``$GRADPROBE_CACHE_DIR``, else ``$XDG_CACHE_HOME/gradprobe``, else ~/.cache/gradprobe."""
    explicit = os.environ.get("GRADPROBE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gradprobe"


def _build(compiler: str, source: str) -> Path:
    key = hashlib.sha256("\0".join(
        [source, compiler, _compiler_version(compiler), " ".join(FLAGS + TUNING),
         platform.machine(), _cpu_identity()]).encode()).hexdigest()[:20]
    target_dir = cache_dir()
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: build into this process's temporary directory
        target_dir = Path(tempfile.mkdtemp(prefix="gradprobe-native-"))
    target = target_dir / f"kernels-{key}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(prefix="gradprobe-build-") as tmp:
        src = Path(tmp) / "kernels.c"
        src.write_text(source)
        built = Path(tmp) / "kernels.so"
        for tuning in (TUNING, TUNING[:1], ()):
            proc = subprocess.run([compiler, *FLAGS, *tuning, str(src), "-o", str(built)],
                                  capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
            if proc.returncode == 0:
                break
        else:
            raise OSError(proc.stderr.strip() or f"{compiler} exited {proc.returncode}")
        partial = target_dir / f".{target.name}.{os.getpid()}.tmp"
        shutil.copyfile(built, partial)
        os.replace(partial, target)  # atomic: readers see the old name absent or complete
    return target


def _compiler_version(compiler: str) -> str:
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True,
                              timeout=30).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return ""


def _cpu_identity() -> str:
    """The CPU model and feature flags (Linux), so a cached -march=native build is not
    loaded on a different CPU sharing the cache directory."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")
    lines = [line for line in text.splitlines() if line.split(":")[0].strip() in wanted]
    return "\n".join(sorted(set(lines)))
