# adbench: `make install && make test` on a fresh machine; `make bench` runs a benchmark.
PYTHON ?= python3
METHOD ?= patchcore
DATA ?= toy
CATEGORY ?=
ARGS ?=
RESULTS ?= results
EXP ?= toy
LAUNCHER ?=
FORMAT ?= markdown
METRIC ?= image_auroc,pixel_auroc,pixel_aupro
TABLE ?= accuracy,efficiency,deltas,draws

.PHONY: install test test-fast test-cuda lint bench leaderboard perf sweep report clean

install:
	$(PYTHON) -m pip install -e ".[dev]"

test:
	$(PYTHON) -m pytest tests

# the tests not marked slow (no end-to-end fits): under a minute
test-fast:
	$(PYTHON) -m pytest tests -m "not slow"

# on a machine with a GPU: the CUDA paths (these tests skip without one), then `make perf` there
test-cuda:
	$(PYTHON) -m pytest tests/test_cuda.py tests/test_methods.py tests/test_knn.py tests/test_prefetch.py tests/test_coreset.py \
		tests/test_predict.py tests/test_cflow.py

lint:
	$(PYTHON) -m ruff check adbench methods datasets conf tests

bench:
	$(PYTHON) -m adbench method=$(METHOD) data=$(DATA) results_dir=$(RESULTS) \
		$(if $(CATEGORY),data.category=$(CATEGORY)) $(ARGS)
	$(PYTHON) -m adbench.leaderboard --results $(RESULTS) --metric $(METRIC) --format $(FORMAT) --intervals

# tables printed, and written to $(RESULTS)/tables/{accuracy,efficiency,deltas,draws}.{md,tex,csv}
leaderboard:
	$(PYTHON) -m adbench.leaderboard --results $(RESULTS) --table $(TABLE) --metric $(METRIC) \
		--format $(FORMAT) --out $(RESULTS)/tables

# a sweep preset (conf/experiment/$(EXP).yaml); LAUNCHER=joblib|submitit_local|submitit_slurm; re-running
# skips finished runs
sweep:
	$(PYTHON) -m adbench +experiment=$(EXP) results_dir=$(RESULTS) \
		$(if $(LAUNCHER),hydra/launcher=$(LAUNCHER)) $(ARGS)
	$(PYTHON) -m adbench.leaderboard --results $(RESULTS) --metric $(METRIC) --out $(RESULTS)/tables

# $(RESULTS)/report/README.md with tables and figures
report:
	$(PYTHON) -m adbench.report --results $(RESULTS)

perf:
	$(PYTHON) -m adbench.perf

clean:
	rm -rf $(RESULTS)/runs $(RESULTS)/leaderboard.csv $(RESULTS)/hydra $(RESULTS)/tables $(RESULTS)/report
