# The two commands: `make run` (set up and start everything, with demo data) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8000

.PHONY: run test install lint bench faults soak screenshots clean

$(PY):
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changed.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[steps,dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py seed_demo
	$(PY) manage.py serve --port $(PORT)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy config workspaces artifacts pipelines_app runs_app stepworks

# pytest's exit code 5 (nothing collected) counts as a pass.
test: lint
	env -u BROKER_URL $(PY) -m pytest -m "not broker" -p no:cacheprovider; rc=$$?; [ $$rc = 0 ] || [ $$rc = 5 ]
	@if [ -n "$$BROKER_URL" ]; then \
		$(PY) -m pytest -m broker -p no:cacheprovider; rc=$$?; [ $$rc = 0 ] || [ $$rc = 5 ]; \
	else echo "BROKER_URL not set: skipping the tests that need a real broker"; fi

bench: install
	@for f in bench/bench_*.py; do $(PY) $$f || exit 1; done

# The fault suite (README "Reliability"): every scenario on Redis and on RabbitMQ at full size,
# then the soak seeds kept in faults/SEEDS (about 30 minutes). Needs PostgreSQL (DATABASE_URL's
# server, else 127.0.0.1:5432), redis-server on PATH and RabbitMQ at 127.0.0.1:5672.
faults: install
	$(PY) -m faults
	$(PY) -m faults --regressions

# A seeded random mix of every fault for SOAK_MINUTES (30); SEED=n replays one.
soak: install
	$(PY) -m faults --soak $${SOAK_MINUTES:-30} $${SEED:+--seed $$SEED}

# The README's tour: a fresh demo driven by Chromium, docs/screenshots/*.png (about 2 minutes).
screenshots: install
	$(PY) docs/screenshots.py

clean:
	rm -rf $(VENV) var
