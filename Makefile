# Two commands on a fresh machine (README.md):  make demo   ·   make test
# Both create .venv and install the pinned stack first (torch pinned to the CPU wheel by constraints.txt).
# On a GPU cluster: install your CUDA torch into .venv first, then `make install CONSTRAINTS=/dev/null`.

PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints.txt
CORES ?= 2
BIN := $(VENV)/bin
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: install slurm demo test test-fast lint dryrun report clean-demo

$(BIN)/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c $(CONSTRAINTS) -r requirements.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-deps -e .
	touch $@

install: $(BIN)/.installed

demo: install
	$(OFFLINE) $(BIN)/snakemake --profile demo --cores $(CORES)
	$(OFFLINE) $(BIN)/snakemake --profile demo --report results/report.html

# CI's SLURM run (tests/test_slurm.py) needs SLURM's daemons: installed here from Debian's packages where this
# is root with apt-get (the tests start and stop the cluster), otherwise those tests are skipped, saying why.
# `make test SLURM=0` installs nothing.
SLURM ?= 1
slurm:
ifeq ($(SLURM),1)
	@bash tests/slurm/cluster.sh install || echo "SLURM is not installed: tests/test_slurm.py will be skipped"
endif

test: install slurm
	$(OFFLINE) $(BIN)/python -m pytest -q

test-fast: install
	$(OFFLINE) $(BIN)/python -m pytest -q -m "not slow and not workflow"

lint: install
	$(OFFLINE) $(BIN)/snakemake --lint
	$(OFFLINE) $(BIN)/snakemake --profile demo --lint

dryrun: install
	$(OFFLINE) $(BIN)/snakemake -n --quiet rules

clean-demo:
	rm -rf results/demo results logs .snakemake/incomplete
