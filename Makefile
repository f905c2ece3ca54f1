# The README's two commands: `make main` (the end-to-end job) and `make test` (the test suite).
# Both install what is missing first (scripts/install.sh; a second run takes about a second).
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: install browser main test test-fast lint format ablation tune clean

install:
	bash scripts/install.sh

browser:
	bash scripts/install_browser.sh

main: install
	$(PY) tools/run_miniworld.py

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# trained / oracle / ideal-text / weak teacher x the four variants x 5 seeds on the test split,
# one table in output/ladder/ladder.md (75 runs, about 7 hours here); --reuse resumes one,
# and the same command with --table-only instead of --reuse shows the runs finished so far
ablation: install
	$(PY) tools/run_miniworld.py --ladder --reuse --no-demo --output output/ladder

tune: install
	$(PY) tools/run_miniworld.py --tune

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: install
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

# caches only: output/ holds every trained run and model folder, which `make` never deletes
clean:
	rm -rf .pytest_cache .ruff_cache
