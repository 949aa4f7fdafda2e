# Two entry points, each doing its own set-up on a fresh machine:
#   make demo   all four systems on the embedded synthetic default, then tables and figures
#   make test   the whole test suite (unit, parity, end-to-end, nbval)
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
export OMP_NUM_THREADS ?= 2
export MPLBACKEND := Agg

.PHONY: demo test venv lab notebooks clean-notebooks check-notebooks pretrain bench

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip
	$(VPY) -m pip install -c constraints.txt -e '.[dev]'
	$(VPY) -m ipykernel install --sys-prefix --name asd-kit --display-name "Python 3 (asd-kit)"
	$(VENV)/bin/jupyter trust notebooks/*.ipynb
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VPY) -m asd_lib.run --system all --params params/demo.yaml

test: $(STAMP)
	TQDM_DISABLE=1 $(VPY) -m pytest tests
	TQDM_DISABLE=1 $(VPY) -m pytest --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg notebooks/
	$(VPY) -m asd_lib.nbclean --check notebooks/

lab: $(STAMP)  ## the course: JupyterLab on notebooks/ with the kit's kernel (the committed notebooks are trusted)
	$(VENV)/bin/jupyter trust notebooks/*.ipynb
	$(VENV)/bin/jupyter lab notebooks/

pretrain: $(STAMP)  ## regenerate checkpoints/ (one thread each, as the shipped runs; about an hour one after the other)
	$(VPY) -m asd_lib.pretrain --encoder beats --steps 10000 --threads 1
	$(VPY) -m asd_lib.pretrain --encoder sslam --steps 4000 --threads 1

bench: $(STAMP)  ## the full-size performance report (benchmarks/report.py, $(OMP_NUM_THREADS) threads): table on screen, rows in results/bench/report.json
	mkdir -p results/bench
	$(VPY) benchmarks/report.py --threads $(OMP_NUM_THREADS) --json results/bench/report.json

notebooks: $(STAMP)  ## maintainers, after make demo: commit the demo run's executed notebooks (and their .py twins)
	$(VPY) tools/commit_notebooks.py

clean-notebooks: $(STAMP)  ## clean the notebooks and sync each with its .py twin (the file saved last gives the cells)
	$(VPY) -m asd_lib.nbclean notebooks

check-notebooks: $(STAMP)  ## change nothing; fail if a notebook needs cleaning or a pair is out of sync
	$(VPY) -m asd_lib.nbclean --check notebooks
