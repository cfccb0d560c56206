"""Building the CPU kernels: a missing compiler is a clear error (the seam then keeps XLA's ops),
and each kernel is gated on the instructions its own library executes."""
import pytest

from ledex_jax.kernels import build


def test_missing_compiler_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("LEDEX_JAX_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(RuntimeError, match="building the CPU kernels failed: cannot run"):
        build.compile_library("avx512")
    assert not list(tmp_path.rglob("*.so"))  # nothing half-built left in the cache


def test_each_kernel_is_gated_on_its_own_instructions(monkeypatch):
    """On a CPU with AVX-512 but no AMX (e.g. AMD Zen 4) the AVX-512 kernels are available and the
    AMX ones say what is missing; the reasons come from the flags of each kernel's library."""
    monkeypatch.setattr(build, "cpu_flags", lambda: {"avx512f", "avx512bw", "avx512vl", "avx512_bf16"})
    monkeypatch.setattr(build, "compile_library", lambda name: (_ for _ in ()).throw(RuntimeError(f"built {name}")))
    build._load.cache_clear()
    try:
        for kernel in ("amx_matmul", "flash_attention", "lm_head_loss"):
            assert build.unavailable_reason(kernel) == "this CPU lacks amx_bf16, amx_tile"
        # the AVX-512 libraries get as far as building (stubbed here to fail with its name)
        assert build.unavailable_reason("f32_matmul") == "built avx512"
        assert build.unavailable_reason("decode_attention") == "built avx512_bf16"
        monkeypatch.setattr(build, "cpu_flags", lambda: {"avx512f"})
        build._load.cache_clear()
        assert "lacks avx512bw, avx512vl" in build.unavailable_reason("f32_matmul")
    finally:
        build._load.cache_clear()


def test_unknown_kernel_is_named():
    with pytest.raises(KeyError, match="unknown CPU kernel 'amx'"):
        build.unavailable_reason("amx")


def test_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv("LEDEX_JAX_CPU_KERNELS", "0")
    build._load.cache_clear()
    try:
        assert build.unavailable_reason("f32_matmul") == "disabled by LEDEX_JAX_CPU_KERNELS=0"
    finally:
        build._load.cache_clear()


@pytest.mark.parametrize("name", sorted(build.LIBRARIES))
def test_every_library_builds_and_exports_its_targets(name, tmp_path, monkeypatch):
    """Each kernel library compiles and exports its FFI handlers on any x86 host with g++, also
    where this CPU cannot run it (nothing is executed here), so CI on a CPU without AMX still
    catches a broken AMX kernel build."""
    import ctypes

    monkeypatch.setenv("LEDEX_JAX_CACHE", str(tmp_path))
    lib = ctypes.CDLL(str(build.compile_library(name)))
    for symbol in build.LIBRARIES[name].targets.values():
        assert hasattr(lib, symbol), symbol
