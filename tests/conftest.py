"""Test-wide setup: JAX on CPU with 8 virtual devices (for sharding tests), and the offline
benchmark data folder that sits beside the repository (`../shared/data`)."""
import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    path = REPO.parent / "shared" / "data"
    if not path.is_dir():
        pytest.fail(f"offline benchmark data not found at {path} (expected ../shared/data beside the repo)")
    return path
