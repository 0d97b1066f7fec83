# Content stamps (foldstack.stamp), included last by the Makefile: the one refresh per run and a rule per stamp.
# S, stamp and source, which name the stamps, are defined at the top of the Makefile.

# Once per run, before Make compares any times (it does so only after reading this whole file): every stamp made or
# brought up to date with its file, in one process (not for goals that compare no artefact). It prints the artefacts
# left newer than their unchanged stamps: rebuilt earlier with identical bytes.
NO_STAMPS := help setup test clean bench demo-data
STAMP_TOUCHED := $(strip $(if $(and $(wildcard $(PY)),$(filter-out $(NO_STAMPS),$(or $(MAKECMDGOALS),help))),\
  $(shell $(PY) -m foldstack.stamp --refresh $(STAMPS) $(if $(DRY),--dry) $(sort $(STAMPED)) --sources \
  $(sort $(SOURCES)) --list $(MEMBERS_TXT) $(MODELS))))
$(if $(and $(DRY),$(STAMP_TOUCHED)),$(info # make -n: $(words $(STAMP_TOUCHED)) file(s) were rebuilt or copied with \
  identical bytes ($(firstword $(STAMP_TOUCHED)) ...); if this plan rebuilds one, the steps after it are not shown))

# One rule per stamp. An artefact's stamp is checked again after the artefact is rebuilt (the recipe); a source's
# stamp only after a rule makes the source (order-only: the refresh above keeps it current). Under `make -n` the
# recipe is printed, not run, and Make takes the stamp as changed wherever the plan rebuilds its file; a touched
# artefact's stamp then waits on nothing, so a dry run plans exactly what a real one would do.
define STAMP_RULE
$(call S,$(1)): $(2)
	$(if $(DRY),,@)$(PY) -m foldstack.stamp $(1) $$@
endef
ORDER_ONLY := $(sort $(filter-out $(STAMPED),$(SOURCES)) $(if $(DRY),$(STAMP_TOUCHED)))
$(foreach f,$(sort $(filter-out $(ORDER_ONLY),$(STAMPED))),$(eval $(call STAMP_RULE,$(f),$(f))))
$(foreach f,$(ORDER_ONLY),$(eval $(call STAMP_RULE,$(f),| $(f))))

# The member list's stamp, when the refresh above did not run (a goal in NO_STAMPS, or no .venv yet when Make read this)
$(MEMBERS_STAMP):
	$(if $(DRY),,@)$(PY) -m foldstack.stamp --refresh $(STAMPS) $(if $(DRY),--dry) --list $(MEMBERS_TXT) $(MODELS)
