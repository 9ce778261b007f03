# adbench: `make install && make test` on a fresh machine; `make bench` runs a benchmark.
PYTHON ?= python3
METHOD ?= patchcore
DATA ?= toy
CATEGORY ?=
ARGS ?=
RESULTS ?= results
EXP ?= toy
FORMAT ?= markdown
METRIC ?= image_auroc,pixel_auroc,pixel_aupro

.PHONY: install test lint bench leaderboard perf sweep report clean

install:
	$(PYTHON) -m pip install -e ".[dev]"

test:
	$(PYTHON) -m pytest tests

lint:
	$(PYTHON) -m ruff check adbench methods datasets conf tests

bench:
	$(PYTHON) -m adbench method=$(METHOD) data=$(DATA) results_dir=$(RESULTS) \
		$(if $(CATEGORY),data.category=$(CATEGORY)) $(ARGS)
	$(PYTHON) -m adbench.leaderboard --results $(RESULTS) --metric $(METRIC) --format $(FORMAT)

leaderboard:
	$(PYTHON) -m adbench.leaderboard --results $(RESULTS) --metric $(METRIC) --format $(FORMAT)

perf:
	$(PYTHON) -m adbench.perf

clean:
	rm -rf $(RESULTS)/runs $(RESULTS)/leaderboard.csv $(RESULTS)/hydra
