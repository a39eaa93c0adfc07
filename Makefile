# Set-up commands: `make fit` (environment + main job on the synthetic corpus) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1
export MLFLOW_TRACKING_URI ?= sqlite:///mlruns/mlflow.db
# Keep the two cores for the work itself rather than for oversubscribed BLAS threads.
export OMP_NUM_THREADS ?= 2

.PHONY: venv fit fit-faces fit-mixed bench-swell bench-stream test test-slow docs-bad-inputs lint ui bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24" 
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

fit: $(STAMP)
	mkdir -p mlruns/artifacts
	$(BIN)/stress-lightning fit --config conf/synthetic.yaml

# Real photos (../shared/data/faces/muxspace): expression only, registered as `stress-faces`.
fit-faces: $(STAMP)
	mkdir -p mlruns/artifacts
	$(BIN)/stress-lightning fit --config conf/faces.yaml

# Several corpora in one run (synthetic + photos + SWELL-KW physiology), registered as `stress-mixed`.
fit-mixed: $(STAMP)
	mkdir -p mlruns/artifacts
	$(BIN)/stress-lightning fit --config conf/mixed.yaml

# SWELL-KW stress leave-subject-out with the package's stress head (benchmarks/results/swell_kw.md).
bench-swell: $(STAMP)
	$(BIN)/python benchmarks/bench_swell_kw.py --out benchmarks/results/swell_kw.md

# The stream: speed by stage and memory over 10 minutes (~25 min), then its heart rate against the ECG of the
# synthetic test sessions (needs `make fit`'s corpus and registered champion).
bench-stream: $(STAMP)
	$(BIN)/python benchmarks/bench_stream.py
	$(BIN)/python benchmarks/bench_stream_hr.py

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

# docs/BAD_INPUTS.md from the tests that try each bad input (`make test` fails when it is out of date).
docs-bad-inputs: $(STAMP)
	STRESS_UPDATE_BAD_INPUTS=1 $(BIN)/python -m pytest -m "bad_input and not slow" -q

lint: $(STAMP)
	$(BIN)/ruff check stress_lightning tests benchmarks docker
	$(BIN)/ruff format --check stress_lightning tests benchmarks docker

ui: $(STAMP)
	mkdir -p mlruns/artifacts
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///mlruns/mlflow.db --default-artifact-root ./mlruns/artifacts

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_signals.py

clean:
	rm -rf $(VENV) .pytest_cache
