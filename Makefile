# Quick start: `make train` (default model on the default data) and `make test`.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA := data/emergency_vehicles
# torch/torchvision are pinned only where this project's CI machines keep them on disk (x86_64, Python 3.11);
# elsewhere pip resolves the newest release allowed by pyproject.toml.
TORCH_PIN := $(shell $(PYTHON) -c "import platform,sys; print('torch==2.14.1 torchvision==0.29.1' if platform.machine()=='x86_64' and sys.version_info[:2]==(3,11) and __import__('os').path.isdir('/etc/xdg/pip') else '')")

.PHONY: train test test-fast lint reproduce data tensorboard clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_PIN),$(PY) -m pip install --quiet $(TORCH_PIN))
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

$(DATA): | $(VENV)/.installed
	$(PY) scripts/prepare_data.py

data: $(VENV)/.installed
	$(PY) scripts/prepare_data.py $(SOURCE)

train: $(VENV)/.installed | $(DATA)
	$(PY) -m image_transfer.train $(ARGS)

reproduce: $(VENV)/.installed | $(DATA)
	$(PY) scripts/reproduce.py --set $(SET) $(ARGS)

# One pytest-xdist worker per core, a test file per worker at a time (its module fixtures are made once), the files
# in the order tests/conftest.py gives them (longest first) rather than xdist's (most tests first).
PARALLEL := -n auto --dist loadfile --no-loadscope-reorder

test: $(VENV)/.installed
	$(PY) -m pytest $(PARALLEL) $(PYTEST_ARGS)

test-fast: $(VENV)/.installed   # no ../shared, no processes or servers started, single fits: under a minute
	$(PY) -m pytest -m "not slow" $(PARALLEL) $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports   # the layers and no import circles (pyproject.toml [tool.importlinter])

tensorboard: $(VENV)/.installed
	$(VENV)/bin/tensorboard --logdir logs

clean:
	rm -rf logs .pytest_cache
