"""The server tests need the `serve` extra (the tiny served model is tests/conftest.py's
`tiny_model_dir`)."""
from __future__ import annotations

import pytest

for _package in ("fastapi", "uvicorn", "openai"):  # the `serve` extra: pip install -e .[serve]
    pytest.importorskip(_package, reason=f"the server tests need the serve extra ({_package})")
