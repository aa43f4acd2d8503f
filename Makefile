# snn: `make demo` runs the whole pipeline on UCI Adult; `make test` runs the test suite.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# setuptools warns on every editable install of a mapped layout (package-dir: snn -> pipeline/_snn)
# about folders named like the package in the working directory; the project has none
EDITABLE := PYTHONWARNINGS="ignore:Editable installation"

.PHONY: install demo parity test lint bench schema clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (or run: make PYTHON=python3 ...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(EDITABLE) $(BIN)/pip install --quiet -e ".[test,lint]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/snn fit specs/adult.yaml
	$(BIN)/snn calibrate specs/adult.yaml
	$(BIN)/snn predict specs/.snn/bundles/adult-income data/adult/adult.test -o specs/.snn/online_test.parquet --online
	$(BIN)/snn validate specs/adult.yaml --compare specs/.snn/online_test.parquet
	@echo
	@echo "Results: specs/.snn/reports/adult-income/latest/ (metrics.json, verdict.json, reliability.png, pr.png, learning_curve.png, ...)"
	@echo "MLflow:  $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/specs/.snn/mlflow.db"

# the served model against the reference scorer on the demo's test rows: exit 0 equal, 3 not
# (SERVED=path-or-models:/NAME@ALIAS serves another model in its place)
parity: $(STAMP)
	$(BIN)/snn parity specs/adult.yaml $(if $(SERVED),--served $(SERVED))

bench: $(STAMP)
	$(EDITABLE) $(BIN)/pip install --quiet -e ".[test,bench]"
	$(BIN)/snn bench --workdir .snn/bench -o bench-results/bench.json

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

lint: $(STAMP)
	$(BIN)/ruff check pipeline cli tests
	$(BIN)/ruff format --check pipeline cli tests
	$(BIN)/mypy pipeline cli

schema: $(STAMP)
	$(BIN)/snn schema > snn.schema.json

clean:
	rm -rf specs/.snn .pytest_cache
