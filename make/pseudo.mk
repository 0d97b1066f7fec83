# Pseudo-label rounds (docs/pseudo-labels.md), included by the Makefile after the model and ensemble rules: round r's
# pseudo rows, `make pseudo` and `make pseudo-score`. The round paths (round_dir, mdir, edir, pseudo_file) and the
# per-round model and ensemble rules are in the Makefile.

# Round r's pseudo rows ($(1) = r, $(2) = r - 1) come from round r-1's models, as ensemble.yaml's members; the
# leaderboard as prerequisite brings the whole round r-1 (and the chosen blend, for `teacher: ensemble`).
define PSEUDO_RULE
features/pseudo_r$(1).parquet: $(call stamp,$(call edir,$(2))/leaderboard.json $(PROCESSED_ALL)) \
  $(call source,$(PSEUDO_CFG))
	$(PY) -m foldstack.pseudo select --config=$(PSEUDO_CFG) --ensemble-config=$(ENSEMBLE_CFG) --competition=$(COMP) \
	  --manifests $(call manifests,$(2)) --ensemble-dir=$(call edir,$(2)) --out=$$@
endef
$(foreach r,$(filter-out 0,$(ROUNDS)),$(eval $(call PSEUDO_RULE,$(r),$(word $(r),$(ROUNDS)))))

# `make pseudo`: round after round, each an ordinary `make folds ROUND=r` (its plan of waves under `make -j`) and
# `make submit ROUND=r` (so an interrupted run resumes at its first unfinished fold), while the last round raised
# the blend's nested CV by min_delta, up to max_rounds (features/pseudo.yaml). `foldstack.pseudo next-round` prints
# the next round, or nothing to stop.
PSEUDO_ARGS = --config=$(PSEUDO_CFG) --competition=$(COMP) --ensemble-root=ensemble
pseudo:  ## pseudo-label rounds while the nested CV improves -> folds/<m>/r<r>/, ensemble/r<r>/, submissions/r<r>/
	@# make -n: round 0's plan only (whether round 1 runs depends on round 0's scores, which a dry run has not got)
	@if [ -n "$(DRY)" ]; then $(MAKE) --no-print-directory submit ROUND=0; \
	  echo "# then pseudo-label rounds while the nested CV improves (features/pseudo.yaml)"; exit 0; fi; \
	r=0; while [ -n "$$r" ]; do \
	  $(MAKE) --no-print-directory folds ROUND=$$r && $(MAKE) --no-print-directory submit ROUND=$$r && \
	  r=$$($(PY) -m foldstack.pseudo next-round --round=$$r $(PSEUDO_ARGS)) || exit 1; \
	done

pseudo-score:  ## per round: pseudo rows and their accuracy vs SOLUTION, nested CV, test score
	$(PY) -m foldstack.pseudo score $(PSEUDO_ARGS) --features=features --solution=$(SOLUTION)
