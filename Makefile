# polypseg: `make demo` runs the main job, `make test` the test suite. Both create .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Real data for tests, benchmarks and the demo: ../shared/datasets when present.
ifneq ($(wildcard ../shared/datasets),)
export POLYPSEG_DATA ?= $(abspath ../shared/datasets)
endif

.PHONY: demo test lint clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The main job: check the data, evaluate the bundled fast model on the CVC-ClinicDB fold it never saw,
# and segment six external PolypGen frames with the bundled full model. Outputs go to demo_out/.
DEMO_FRAMES := $(POLYPSEG_DATA)/PolypGen-val/images/1[0-5]_*.jpg
demo: $(VENV)/.base
	$(VENV)/bin/polypseg data check
	$(VENV)/bin/polypseg evaluate --checkpoint fast --split test --out demo_out/eval --overwrite
	$(VENV)/bin/polypseg predict '$(DEMO_FRAMES)' --checkpoint full --out demo_out/predict --overwrite
	@echo "report: demo_out/eval/report.html   overlays: demo_out/predict/*_overlay.png"

test: $(VENV)/.dev
	$(PY) -m pytest -q

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests benchmarks docs
	$(VENV)/bin/ruff format --check src tests benchmarks docs

clean:
	rm -rf $(VENV) runs demo_out .pytest_cache
