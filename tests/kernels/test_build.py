"""Building the CPU kernels: a missing compiler is a clear error (callers then keep XLA's ops),
and `enabled(False)` switches the kernels off for code traced inside it."""
import pytest

from ledex_jax.kernels import build


def test_missing_compiler_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("LEDEX_JAX_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(RuntimeError, match="building the CPU kernels failed: cannot run"):
        build.compile_library()
    assert not list(tmp_path.rglob("*.so"))  # nothing half-built left in the cache


def test_enabled_false_switches_kernels_off():
    with build.enabled(False):
        assert not build.available()
        assert "enabled(False)" in build.unavailable_reason()
