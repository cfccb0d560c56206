"""pytest marks for the CPU kernels: each test that needs a kernel skips on its own when this
CPU cannot run that kernel, naming the kernel and the reason."""
import pytest

from ledex_jax.kernels import build


def needs(kernel: str):
    reason = build.unavailable_reason(kernel)
    return pytest.mark.skipif(reason is not None, reason=f"CPU kernel {kernel}: {reason}")


def implementations(kernel: str):
    """Parameters "xla" and "cpu" (the latter skipped where `kernel` cannot run), for tests that
    run the same check on XLA's path and on the kernel's."""
    return [pytest.param("xla", id="xla"), pytest.param("cpu", id=f"cpu-{kernel}", marks=needs(kernel))]
