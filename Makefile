# Two commands for a fresh machine:  `make train`  and  `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q -c constraints.txt
DATA   ?= ../shared/data/hymenoptera_data
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install install-dev train test sync-check chromium readme

$(VENV)/.base: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PIP) -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PIP) -e ".[dev]"
	touch $@

install: $(VENV)/.base
install-dev: $(VENV)/.dev chromium

# Debian's Chromium drives the browser tests (Playwright may not download its own browser here).
chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

## Train a classifier on a folder of class folders (offline, pretrained EfficientNet-Lite); writes model.safetensors + model.json.
train: install
	$(VENV)/bin/imgcls train $(DATA) --out model.safetensors
	@echo "next: $(VENV)/bin/imgcls app model.safetensors"

## Run the notebooks as tests, then the integration tests (browser, CLI, network, real photos).
test: install-dev
	$(VENV)/bin/nbdev-test --n-workers 2
	$(VENV)/bin/pytest -q tests

## README.md is nbs/index.ipynb as Markdown (nbdev-readme needs quarto, which cannot be installed offline).
readme:
	python3 tools/readme.py

## Fail when the generated package, README or the cleaned notebooks differ from what is committed.
sync-check: install-dev
	$(VENV)/bin/nbdev-export
	$(VENV)/bin/nbdev-clean
	$(MAKE) readme
	git diff --exit-code --stat -- imgcls nbs README.md && test -z "$$(git status --porcelain -- imgcls nbs README.md)"
