# CineLoRA — the dependency graph from results/ to paper/. `make` alone lists the targets.
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:
SHELL := /bin/bash

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export SOURCE_DATE_EPOCH := 0
export PYTHONHASHSEED := 0
TEXLIVE := latexmk texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended

# The study's experiments, read from their one home, cinelora/study.py (the system python3: no venv needed):
# Table 2's methods, the ablations, all of them in dependency order, and the runs the training curves show.
METHODS     := $(shell python3 -m cinelora.study methods)
ABLATIONS   := $(shell python3 -m cinelora.study ablations)
EXPERIMENTS := $(shell python3 -m cinelora.study experiments)
CURVES      := $(shell python3 -m cinelora.study curve_experiments)
SEEDS       := $(shell python3 -m cinelora.study seeds)
METRIC      := $(shell python3 -m cinelora.study metric)
SEARCH      := $(shell python3 -m cinelora.study search)
ifeq ($(and $(METHODS),$(ABLATIONS),$(EXPERIMENTS),$(CURVES),$(SEEDS),$(METRIC),$(SEARCH)),)
$(error python3 -m cinelora.study printed no list: run make from the repository root)
endif

# Output roots: `make check` points them at a temporary folder.
PAPER := paper
DOCS  := docs

# What the report reads: results/ only.
METRICS        := $(sort $(wildcard results/*/*/metrics.csv results/*/*/seed*/metrics.csv))
FVD_FLOORS     := $(sort $(wildcard results/proxy_evaluators/*/fvd_sanity.csv))
CONFIGS        := $(sort $(wildcard results/*/*/config.resolved.yaml))
RUN_PROVENANCE := $(sort $(wildcard results/*/*/provenance.json results/*/*/seed*/provenance.json))
BENCH          := $(sort $(wildcard results/bench/steps_*.csv results/bench/configuration_*.csv results/bench/withdrawn.csv \
                    results/bench/proxy_loop_*.csv))
BENCH_PROV     := $(sort $(wildcard results/bench/provenance_*.json))
BENCH_DOC      := $(sort $(wildcard results/bench/steps_*.csv results/bench/withdrawn.csv results/bench/provenance_*.json \
                    results/bench/attention_*.csv results/bench/terms_*.csv))
HARDWARE       := $(sort $(wildcard configs/hardware/*.yaml))
METHOD_RUNS    := $(sort $(foreach e,$(METHODS),$(wildcard results/$(e)/*/train_log.jsonl \
                    results/$(e)/*/provenance.json results/$(e)/*/config.resolved.yaml)))
METHOD_SUMMARIES := $(sort $(foreach e,$(METHODS),$(wildcard results/$(e)/*/train_summary.json)))
CURVE_RUNS     := $(sort $(foreach e,$(CURVES),$(wildcard results/$(e)/*/train_log.jsonl \
                    results/$(e)/*/train_summary.json results/$(e)/*/config.resolved.yaml)))
SAMPLES        := $(sort $(foreach e,$(METHODS),$(wildcard results/$(e)/*/samples/*.png)))

# The report code each output runs (besides its own module).
R   := cinelora/report
LIB := $(R)/__init__.py cinelora/study.py cinelora/results.py cinelora/atomic.py cinelora/stats.py cinelora/config.py
FIG := $(R)/figures.py $(R)/figures_metric.py $(R)/table1.py $(R)/table2.py $(LIB)

TABLES  := $(PAPER)/tables/table1.tex $(PAPER)/tables/table2.tex $(PAPER)/tables/table3.tex $(PAPER)/tables/table4.tex \
           $(PAPER)/tables/main_comparison.tex
FIGURES := $(foreach f,metric_vs_eps frame_strips training_curves domain_bars,\
             $(PAPER)/figures/$(f).pdf $(PAPER)/figures/$(f).png)
NUMBERS := $(PAPER)/generated/numbers.tex
PROVENANCE := $(PAPER)/generated/provenance.tsv
PERFORMANCE := $(DOCS)/performance.md

.PHONY: help setup test test-slow proxy-base proxy-evaluators proxy-search proxy-study smoke bench bench-smoke bench-terms table1 table2 table3 table4 main-comparison figures numbers provenance reports performance gallery paper check clean-runs

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

test-slow: $(STAMP)  ## the tests `make test` leaves out (marked slow: compiled blocks, two-process context parallelism; 1-2 min on 2 cores)
	$(PY) -m pytest -q -m slow

CHUNK_MINUTES ?= 8.5
proxy-base: $(STAMP)  ## pre-train the proxy base model on one GPU, in chunks of CHUNK_MINUTES (each rerun continues)
	@if [ -f results/proxy_base/proxy/provenance.json ]; then echo "proxy_base: finished (results/proxy_base/proxy), kept"; \
	else PROFILE=proxy experiments/proxy_base/run.sh --budget-minutes $(CHUNK_MINUTES); fi

proxy-evaluators: $(STAMP)  ## train the proxy I3D, CLIP and AlexNet trunk on one GPU, in chunks of CHUNK_MINUTES (each rerun continues)
	@if [ -f results/proxy_evaluators/proxy/provenance.json ]; then echo "proxy_evaluators: finished (results/proxy_evaluators/proxy), kept"; \
	else PROFILE=proxy experiments/proxy_evaluators/run.sh --budget-minutes $(CHUNK_MINUTES); fi

proxy-search: $(STAMP)  ## choose the proxy's lr, steps, λ and ε on validation clips, in chunks of CHUNK_MINUTES (each rerun continues)
	@if [ -f results/$(SEARCH)/proxy/provenance.json ]; then echo "$(SEARCH): finished (results/$(SEARCH)/proxy), kept"; \
	else PROFILE=proxy experiments/$(SEARCH)/run.sh --budget-minutes $(CHUNK_MINUTES); fi

smoke: $(STAMP)  ## run every experiment (and the search) at smoke scale on the CPU, in dependency order (finished runs are kept)
	@for e in $(EXPERIMENTS) $(SEARCH); do \
	  if [ -f results/$$e/smoke/provenance.json ]; then echo "$$e: finished (results/$$e/smoke), kept"; \
	  else experiments/$$e/run.sh || exit 1; fi; \
	done

proxy-study: $(STAMP)  ## every experiment at proxy with each of the study's seeds, in dependency order (finished ones kept: a rerun continues)
	@for e in $(EXPERIMENTS); do for k in $(SEEDS); do \
	  if [ $$e = $(METRIC) ]; then [ $$k = 0 ] || continue; seed=; else seed="--seed $$k"; fi; \
	  $(PY) -m cinelora run --config experiments/$$e/config.yaml --profile proxy $$seed --skip-finished || exit 1; \
	done; done

BENCH_LABEL ?= gpu
bench: $(STAMP)  ## true-size 14B LoRA step benchmark on one CUDA GPU -> results/bench/*_$(BENCH_LABEL).*
	$(PY) -m bench --plan full --label $(BENCH_LABEL)

bench-smoke: $(STAMP)  ## the benchmark's code paths at the smoke preset on the CPU (seconds) -> runs/bench/smoke/
	$(PY) -m bench --plan smoke

bench-terms: $(STAMP)  ## s/step with and without each loss term (smoke on CPU; PROFILE=proxy on a GPU) -> results/bench/terms_*
	$(PY) -m bench.terms --profile $${PROFILE:-smoke} --label $(BENCH_LABEL)

table1: $(PAPER)/tables/table1.tex  ## Table 1 (metric robustness, 2AFC) from results/*/*/metrics.csv
table2: $(PAPER)/tables/table2.tex  ## Table 2 (cross-domain: FVD, CLIP-SIM, LPIPS) from results/*/*/metrics.csv
table3: $(PAPER)/tables/table3.tex  ## Table 3 (ablations vs parents) from metrics.csv + config.resolved.yaml
table4: $(PAPER)/tables/table4.tex  ## Table 4 (compute) from results/bench/ + the methods' train_log.jsonl
main-comparison: $(PAPER)/tables/main_comparison.tex  ## the main comparison stated before the runs (robust_lpips_r8 vs lora_r8, held out), with its verdict
figures: $(FIGURES)  ## paper/figures/*.pdf (+ PNG copies): frame strips, training curves, domain bars, metric vs eps
numbers: $(NUMBERS)  ## paper/generated/numbers.tex: every number quoted in the prose, as a macro
provenance: $(PROVENANCE)  ## paper/generated/provenance.tsv: each number's results file, git sha, config hash
reports: $(TABLES) $(FIGURES) $(NUMBERS) $(PROVENANCE)  ## every generated paper input (what `make check` compares)
gallery: $(STAMP)  ## gallery/index.html and one page per profile: frame strips and metrics of every run, from results/
	$(PY) -m cinelora report gallery --out gallery/index.html

performance: $(PERFORMANCE)  ## docs/performance.md: what each speed lever measured, why the hardware presets hold their values

$(PAPER)/tables/table1.tex: $(METRICS) $(R)/table1.py $(LIB) | $(STAMP)
	$(PY) -m cinelora report table1 --out $@

$(PAPER)/tables/table2.tex: $(METRICS) $(FVD_FLOORS) $(R)/table2.py $(LIB) | $(STAMP)
	$(PY) -m cinelora report table2 --out $@

$(PAPER)/tables/main_comparison.tex: $(METRICS) $(FVD_FLOORS) $(R)/main_comparison.py $(R)/table2.py $(LIB) | $(STAMP)
	$(PY) -m cinelora report main-comparison --out $@

$(PAPER)/tables/table3.tex: $(METRICS) $(CONFIGS) $(R)/table3.py $(R)/table2.py $(LIB) | $(STAMP)
	$(PY) -m cinelora report table3 --out $@

$(PAPER)/tables/table4.tex: $(BENCH) $(METHOD_RUNS) $(R)/table4.py $(R)/table2.py $(LIB) | $(STAMP)
	$(PY) -m cinelora report table4 --out $@

$(PAPER)/figures/metric_vs_eps.pdf $(PAPER)/figures/metric_vs_eps.png &: $(METRICS) $(FIG) | $(STAMP)
	$(PY) -m cinelora report metric-vs-eps --out $(PAPER)/figures/metric_vs_eps.pdf

$(PAPER)/figures/frame_strips.pdf $(PAPER)/figures/frame_strips.png &: $(SAMPLES) $(FIG) | $(STAMP)
	$(PY) -m cinelora report frame-strips --out $(PAPER)/figures/frame_strips.pdf

$(PAPER)/figures/training_curves.pdf $(PAPER)/figures/training_curves.png &: $(CURVE_RUNS) $(FIG) | $(STAMP)
	$(PY) -m cinelora report training-curves --out $(PAPER)/figures/training_curves.pdf

$(PAPER)/figures/domain_bars.pdf $(PAPER)/figures/domain_bars.png &: $(METRICS) $(FIG) | $(STAMP)
	$(PY) -m cinelora report domain-bars --out $(PAPER)/figures/domain_bars.pdf

$(NUMBERS): $(METRICS) $(METHOD_SUMMARIES) $(BENCH) $(METHOD_RUNS) $(RUN_PROVENANCE) $(R)/numbers.py $(R)/table1.py $(R)/table2.py \
            $(R)/table3.py $(R)/table4.py $(LIB) | $(STAMP)
	$(PY) -m cinelora report numbers --out $@

$(PROVENANCE): $(METRICS) $(CONFIGS) $(RUN_PROVENANCE) $(BENCH) $(BENCH_PROV) $(METHOD_RUNS) $(METHOD_SUMMARIES) \
               $(CURVE_RUNS) $(SAMPLES) $(wildcard $(R)/*.py) $(LIB) | $(STAMP)
	$(PY) -m cinelora report provenance --out $@

$(PERFORMANCE): $(BENCH_DOC) $(HARDWARE) $(R)/performance.py $(R)/table4.py cinelora/speed/levers.py $(LIB) | $(STAMP)
	$(PY) -m cinelora report performance --out $@

paper: $(PAPER)/main.pdf  ## build paper/main.pdf with latexmk (Debian: apt-get install latexmk texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended)

$(PAPER)/main.pdf: $(PAPER)/main.tex $(TABLES) $(filter %.pdf,$(FIGURES)) $(NUMBERS)
	@command -v latexmk >/dev/null || { echo "latexmk not found: sudo apt-get install $(TEXLIVE)" >&2; exit 1; }
	cd $(PAPER) && latexmk -pdf -interaction=nonstopmode -halt-on-error main.tex

check: $(STAMP)  ## rebuild every paper input and docs/performance.md into a temporary folder and diff them (PDF: as text)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  $(MAKE) --no-print-directory -s PAPER=$$tmp DOCS=$$tmp/docs reports performance && \
	  for d in tables figures generated; do diff -ru paper/$$d $$tmp/$$d || exit 1; done && \
	  diff -u docs/performance.md $$tmp/docs/performance.md && \
	  echo "paper/tables, paper/figures, paper/generated, docs/performance.md: byte-identical" && \
	  if [ -f paper/main.pdf ] && command -v latexmk >/dev/null && command -v pdftotext >/dev/null; then \
	    cp paper/main.tex $$tmp/ && $(MAKE) --no-print-directory -s PAPER=$$tmp $$tmp/main.pdf >/dev/null && \
	    diff -u <(pdftotext paper/main.pdf -) <(pdftotext $$tmp/main.pdf -) && echo "paper/main.pdf: same text"; \
	  fi

clean-runs:  ## delete the git-ignored heavy state (checkpoints, caches, procedural world)
	rm -rf runs
