# CineLoRA — the dependency graph from results/ to paper/. `make` alone lists the targets.
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
SHELL := /bin/bash

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export SOURCE_DATE_EPOCH := 0
export PYTHONHASHSEED := 0

METRICS := $(sort $(wildcard results/*/*/metrics.csv))
REPORT_DEPS := cinelora/report/table2.py cinelora/results.py

.PHONY: help setup test smoke table2 paper check clean-runs

help:  ## list the targets
	@grep -E '^[a-z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | column -t -s $$'\t'

setup: $(STAMP)  ## create .venv with the pinned packages (torch/torchvision from the local wheel store)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

test: $(STAMP)  ## the CPU test suite (what CI runs)
	$(PY) -m pytest -q

smoke: $(STAMP)  ## run every experiment at smoke scale on the CPU (resumes; refuses to overwrite finished results)
	for e in base lora_r8; do experiments/$$e/run.sh; done

table2: paper/tables/table2.tex  ## paper Table 2 (cross-domain) from results/*/*/metrics.csv

paper/tables/table2.tex: $(METRICS) $(REPORT_DEPS) | $(STAMP)
	$(PY) -m cinelora report table2 --out $@

paper: paper/main.pdf  ## build the paper PDF (needs Debian's latexmk + texlive-latex-recommended)

paper/main.pdf: paper/main.tex paper/tables/table2.tex
	cd paper && latexmk -pdf -interaction=nonstopmode -halt-on-error main.tex

check: $(STAMP)  ## rebuild the tables into a temporary folder and diff against the committed ones
	tmp=$$(mktemp -d) && $(PY) -m cinelora report table2 --out $$tmp/table2.tex && \
	  diff -u paper/tables/table2.tex $$tmp/table2.tex && echo "paper/tables: byte-identical"

clean-runs:  ## delete the git-ignored heavy state (checkpoints, caches, procedural world)
	rm -rf runs
