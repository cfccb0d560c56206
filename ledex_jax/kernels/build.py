"""Builds and loads the CPU kernels (`*.cc` here, XLA FFI custom calls) on first use, each library
only where this CPU has the instructions it executes.

Three libraries, one per instruction set, so each kernel is gated on what it really needs:

| library       | kernels                                        | CPU flags                         |
|---------------|------------------------------------------------|-----------------------------------|
| `avx512`      | `f32_matmul` (float32 decode products)         | avx512f, avx512bw, avx512vl       |
| `avx512_bf16` | `decode_attention` (one token over the cache)  | + avx512_bf16                     |
| `amx`         | `amx_matmul`, `flash_attention`, `lm_head_loss` | + amx_tile, amx_bf16              |

Compiled with the system C++ compiler, cached by a hash of the sources, flags and JAX version
(`$LEDEX_JAX_CACHE`, default `~/.cache/ledex_jax`). `LEDEX_JAX_CPU_KERNELS=0` switches all off.
`unavailable_reason(kernel)` says why a kernel cannot run here; the seam (`ledex_jax/ops`) then
keeps XLA's op for it.
"""
from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import logging
import os
import pathlib
import shutil
import subprocess
import tempfile

import jax

HERE = pathlib.Path(__file__).parent
HEADERS = ("amx_tiles.h", "kernel_utils.h", "parallel.h")
_AVX512 = ("avx512f", "avx512bw", "avx512vl")


@dataclasses.dataclass(frozen=True)
class Library:
    sources: tuple[str, ...]
    cpu_flags: tuple[str, ...]          # /proc/cpuinfo flags its code executes
    compiler_flags: tuple[str, ...]
    targets: dict                       # FFI target name -> exported symbol


LIBRARIES = {
    "avx512": Library(("f32_matmul.cc",), _AVX512, ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mfma"),
                      {"ledex_f32_matmul": "LedexF32Matmul"}),
    "avx512_bf16": Library(("decode_attention.cc",), _AVX512 + ("avx512_bf16",),
                           ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mfma", "-mavx512bf16"),
                           {"ledex_decode_attention": "LedexDecodeAttention"}),
    "amx": Library(("amx_matmul.cc", "flash_attention.cc", "lm_head_loss.cc"),
                   _AVX512 + ("avx512_bf16", "amx_tile", "amx_bf16"),
                   ("-mavx512f", "-mavx512bw", "-mavx512vl", "-mfma", "-mavx512bf16", "-mamx-tile", "-mamx-bf16"),
                   {"ledex_amx_matmul": "LedexAmxMatmul", "ledex_amx_pack": "LedexAmxPack",
                    "ledex_flash_attention_fwd": "LedexFlashAttentionForward",
                    "ledex_flash_attention_bwd": "LedexFlashAttentionBackward",
                    "ledex_lm_head_loss_fwd": "LedexLmHeadLossForward",
                    "ledex_lm_head_loss_bwd": "LedexLmHeadLossBackward"}),
}
# Each kernel and the library that holds it.
KERNELS = {"f32_matmul": "avx512", "decode_attention": "avx512_bf16", "amx_matmul": "amx",
           "flash_attention": "amx", "lm_head_loss": "amx"}

log = logging.getLogger(__name__)
_REGISTERED: set[str] = set()  # FFI targets registered in this process (once each)


def cpu_flags() -> set[str]:
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


def compile_library(name: str) -> pathlib.Path:
    """Library `name`'s shared object, built once per (sources, flags, compiler, JAX version)."""
    lib = LIBRARIES[name]
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no C++ compiler (g++/c++ or $CXX) to build the CPU kernels")
    flags = ["-O2", "-std=c++17", "-shared", "-fPIC", *lib.compiler_flags, f"-I{jax.ffi.include_dir()}"]
    digest = hashlib.sha256(" ".join([compiler, *flags, jax.__version__]).encode())
    for source in lib.sources + HEADERS:
        digest.update((HERE / source).read_bytes())
    out = _cache_dir() / f"ledex_{name}-{digest.hexdigest()[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        built = pathlib.Path(tmp) / out.name
        cmd = [compiler, *flags, *(str(HERE / s) for s in lib.sources), "-o", str(built)]
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
def _load(name: str) -> str | None:
    """Builds, loads and registers library `name` once; returns why it is unavailable, or None."""
    if os.environ.get("LEDEX_JAX_CPU_KERNELS", "1") == "0":
        return "disabled by LEDEX_JAX_CPU_KERNELS=0"
    lib = LIBRARIES[name]
    missing = set(lib.cpu_flags) - cpu_flags()
    if missing:
        return f"this CPU lacks {', '.join(sorted(missing))}"
    try:
        handle = ctypes.CDLL(str(compile_library(name)))
    except (RuntimeError, OSError) as e:
        log.warning("CPU kernels (%s) unavailable, using XLA's ops: %s", name, e)
        return str(e)
    if name == "amx" and handle.LedexAmxRequestPermission() != 0:
        return "Linux refused AMX tile state to this process (arch_prctl ARCH_REQ_XCOMP_PERM)"
    for target, symbol in lib.targets.items():
        if target not in _REGISTERED:
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(handle, symbol)), platform="cpu")
            _REGISTERED.add(target)
    return None


def unavailable_reason(kernel: str) -> str | None:
    """None when `kernel` (a key of KERNELS) runs here, else why not."""
    if kernel not in KERNELS:
        raise KeyError(f"unknown CPU kernel {kernel!r}; known: {sorted(KERNELS)}")
    if jax.default_backend() != "cpu":
        return f"the backend is {jax.default_backend()}; these kernels are CPU-only"
    return _load(KERNELS[kernel])


def available(kernel: str) -> bool:
    return unavailable_reason(kernel) is None


def require(kernel: str, caller: str) -> None:
    """Raises a RuntimeError naming `caller` and the reason when `kernel` cannot run here."""
    reason = unavailable_reason(kernel)
    if reason is not None:
        raise RuntimeError(f"{caller}: the CPU kernel {kernel!r} is unavailable ({reason})")
