"""Builds and loads the CPU kernels (`*.cc` here, XLA FFI custom calls) on first use.

Compiled with the system C++ compiler into one shared library, cached by a hash of the sources,
flags and JAX version (`$LEDEX_JAX_CACHE`, default `~/.cache/ledex_jax`). The kernels need an
x86 CPU with AMX and AVX-512 bf16 (Sapphire Rapids or newer); elsewhere, without a compiler, or
with `LEDEX_JAX_CPU_KERNELS=0`, `unavailable_reason()` says why and callers keep XLA's ops.
"""
from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import hashlib
import logging
import os
import pathlib
import shutil
import subprocess
import tempfile

import jax

from ledex_jax.sharding import active_mesh

HERE = pathlib.Path(__file__).parent
SOURCES = ("amx_matmul.cc", "f32_matmul.cc", "decode_attention.cc", "flash_attention.cc", "lm_head_loss.cc")
HEADERS = ("amx_tiles.h", "kernel_utils.h", "parallel.h")
CPU_FLAGS = {"amx_tile", "amx_bf16", "avx512_bf16", "avx512bw", "avx512vl"}
TARGETS = {"ledex_amx_matmul": "LedexAmxMatmul", "ledex_amx_pack": "LedexAmxPack", "ledex_f32_matmul": "LedexF32Matmul",
           "ledex_decode_attention": "LedexDecodeAttention",
           "ledex_flash_attention_fwd": "LedexFlashAttentionForward",
           "ledex_flash_attention_bwd": "LedexFlashAttentionBackward",
           "ledex_lm_head_loss_fwd": "LedexLmHeadLossForward", "ledex_lm_head_loss_bwd": "LedexLmHeadLossBackward"}

log = logging.getLogger(__name__)
_ENABLED = contextvars.ContextVar("ledex_cpu_kernels", default=True)


def _cpu_flags() -> set[str]:
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _cache_dir() -> pathlib.Path:
    root = os.environ.get("LEDEX_JAX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ledex_jax")
    return pathlib.Path(root) / "kernels"


def compile_library() -> pathlib.Path:
    """The kernels' shared library, built once per (sources, flags, compiler, JAX version)."""
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no C++ compiler (g++/c++ or $CXX) to build the CPU kernels")
    flags = ["-O2", "-std=c++17", "-shared", "-fPIC", "-mamx-tile", "-mamx-bf16", "-mavx512f",
             "-mavx512bw", "-mavx512vl", "-mavx512bf16", f"-I{jax.ffi.include_dir()}"]
    digest = hashlib.sha256(" ".join([compiler, *flags, jax.__version__]).encode())
    for name in SOURCES + HEADERS:
        digest.update((HERE / name).read_bytes())
    out = _cache_dir() / f"ledex_cpu_kernels-{digest.hexdigest()[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        built = pathlib.Path(tmp) / out.name
        cmd = [compiler, *flags, *(str(HERE / s) for s in SOURCES), "-o", str(built)]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:
            raise RuntimeError(f"building the CPU kernels failed: cannot run {compiler}: {e}") from e
        if result.returncode != 0:
            errors = [line for line in result.stderr.splitlines() if "error" in line] or result.stderr.splitlines()
            raise RuntimeError(f"building the CPU kernels failed ({compiler}):\n" + "\n".join(errors[:20]))
        os.replace(built, out)  # atomic: concurrent processes may each build; one file wins
    return out


@functools.cache
def _load() -> str | None:
    """Builds, loads and registers the kernels once; returns why they are unavailable, or None."""
    if os.environ.get("LEDEX_JAX_CPU_KERNELS", "1") == "0":
        return "disabled by LEDEX_JAX_CPU_KERNELS=0"
    missing = CPU_FLAGS - _cpu_flags()
    if missing:
        return f"this CPU lacks {', '.join(sorted(missing))}"
    try:
        lib = ctypes.CDLL(str(compile_library()))
    except (RuntimeError, OSError) as e:
        log.warning("CPU kernels unavailable, using XLA's ops: %s", e)
        return str(e)
    if lib.LedexAmxRequestPermission() != 0:
        return "Linux refused AMX tile state to this process (arch_prctl ARCH_REQ_XCOMP_PERM)"
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    return None


def unavailable_reason() -> str | None:
    """None when the kernels run here (CPU backend, AMX CPU, library built, not switched off by
    `enabled(False)`), else why not."""
    if not _ENABLED.get():
        return "switched off by kernels.build.enabled(False)"
    if jax.default_backend() != "cpu":
        return f"the backend is {jax.default_backend()}; these kernels are CPU-only"
    return _load()


def available() -> bool:
    return unavailable_reason() is None


def usable_in_trace() -> bool:
    """`available()` and no multi-device mesh active for the code being traced: the custom calls
    have no sharding rule, so sharded programs keep XLA's ops."""
    active = active_mesh()
    return (active is None or active[0].size == 1) and available()


@contextlib.contextmanager
def enabled(flag: bool):
    """Code traced inside uses the kernels only if `flag` (and they are available): how a caller
    (e.g. `Sampler(cpu_kernels=False)`) keeps XLA's ops for its programs. It acts at trace time,
    and `jax.jit` caches traces per function: give each setting its own jitted function (the
    Sampler's are per instance)."""
    token = _ENABLED.set(flag)
    try:
        yield
    finally:
        _ENABLED.reset(token)
