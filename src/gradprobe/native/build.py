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
import hashlib
import os
import platform
import shutil
import subprocess
import sysconfig
import tempfile
import threading
from pathlib import Path

SOURCES = ("tanh.c", "activations.c", "reduce.c", "scale.c")
FLAGS = ("-O3", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC")
TUNING = ("-march=native", "-fopenmp")  # tried with both, then without OpenMP, then neither
BUILD_TIMEOUT_S = 120

_reason: str | None = None


def unavailable_reason() -> str | None:
    """Why :func:`load` gave None (None when the library loaded or was not tried yet)."""
    return _reason


_lock = threading.Lock()
_loaded: list[ctypes.CDLL | None] = []  # the one result, once tried


def load() -> ctypes.CDLL | None:
    """The compiled kernel library, built on first use; None when it cannot be had.

    Thread-safe: engines training side by side may all ask at once; one builds.
    """
    if _loaded:
        return _loaded[0]
    with _lock:
        if not _loaded:
            _loaded.append(_load())
    return _loaded[0]


def _load() -> ctypes.CDLL | None:
    global _reason
    if os.environ.get("GRADPROBE_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        _reason = "disabled by GRADPROBE_NATIVE=0"
        return None
    compiler = find_compiler()
    if compiler is None:
        _reason = "no C compiler found (set CC, or install gcc or clang)"
        return None
    try:
        source = "".join((Path(__file__).parent / name).read_text() for name in SOURCES)
        lib = ctypes.CDLL(str(_build(compiler, source)))
        pointer, size, count = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        lib.gradprobe_tanh_f32.argtypes = [pointer, pointer, size, count]
        lib.gradprobe_bias_tanh_f32.argtypes = [pointer, pointer, pointer, size, size, size,
                                                count]
    except Exception as err:  # noqa: BLE001 -- any failure means: use torch's kernels
        _reason = f"could not build the C kernels: {(str(err).splitlines() or [''])[0][:200]}"
        return None
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
    name = f"kernels-{key}.so"
    try:
        cached = cache_dir() / name
        if cached.exists():
            return cached
    except (OSError, RuntimeError):  # no usable home directory
        cached = None
    with tempfile.TemporaryDirectory(prefix="gradprobe-build-") as tmp:
        built = _compile(compiler, source, Path(tmp))
        for folder in ([cached.parent] if cached is not None else []) + [None]:
            try:
                return _install(built, folder or Path(tempfile.mkdtemp(prefix="gradprobe-")),
                                name)
            except OSError:  # a read-only cache: this process's own temporary folder
                continue
    raise OSError("could not write the compiled library anywhere")


def _compile(compiler: str, source: str, folder: Path) -> Path:
    src, built = folder / "kernels.c", folder / "kernels.so"
    src.write_text(source)
    for tuning in (TUNING, TUNING[:1], ()):
        proc = subprocess.run([compiler, *FLAGS, *tuning, str(src), "-o", str(built)],
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        if proc.returncode == 0:
            return built
    raise OSError(proc.stderr.strip() or f"{compiler} exited {proc.returncode}")


def _install(built: Path, folder: Path, name: str) -> Path:
    """Copy into ``folder/name`` atomically: a unique temporary name, then a rename, so a
    concurrent reader sees no file or a complete one."""
    folder.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(handle)
    try:
        shutil.copyfile(built, partial)
        os.replace(partial, folder / name)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return folder / name


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
