# One-word commands. `make test` is what CI runs (.ci/run calls it).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-reset tour test lint typecheck pytest bench setup clean

demo: $(STAMP)  ## an offline aiogram bot on a SQLite file; run it twice to see it remember
	$(PY) examples/bot_demo.py

demo-reset: $(STAMP)  ## the demo from a clean slate: forgets what earlier runs stored
	$(PY) examples/bot_demo.py --reset

tour: $(STAMP)  ## a tour of the API (typed keys, TTL, atomic counters, prefixes)
	$(PY) examples/tour.py

test: $(STAMP)  ## install everything, then lint, type-check and run every test
	bash scripts/system-deps.sh
	$(MAKE) lint typecheck pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests examples bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(VENV)/bin/pytest

bench: $(STAMP)  ## benchmarks vs peers, same run; results go in docs/benchmarks.md
	$(PY) bench/bench_memory.py
	$(PY) bench/bench_sqlite.py
	$(PY) bench/bench_postgres.py
	$(PY) bench/bench_redis.py
	$(PY) bench/bench_cloudflare.py
	$(PY) bench/bench_cli_copy.py
	$(PY) bench/bench_bot.py

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $(STAMP)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
