# Two commands: `make demo` (the main job on the embedded data) and `make test`.
# Both create .venv and install what they need with pip the first time (Python 3.10+, git and make needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-small test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch and torchvision first, pinned together (see README "Install"); pip reads the local wheels where present.
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m salt demo --preset tiny --out runs/demo-tiny

demo-small: $(STAMP)
	$(PY) -m salt demo --preset small --out runs/demo-small

# The SLURM tests start a local single-node cluster (slurm/local_cluster.sh, root + apt); here they must run.
# TEST_WORKERS pytest-xdist workers (one torch thread each); the SLURM tests all run on one of them, in order.
TEST_WORKERS ?= 2
test: $(STAMP)
	SALT_REQUIRE_SLURM=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/train_step.py

clean:
	rm -rf $(VENV) runs .pytest_cache
