# One command sets up and runs each job on a fresh machine (Python 3.11 with venv and pip):
#   make notebooks   the main job: execute every notebook in order at classroom scale, in place
#   make test        every test at smoke scale: ruff, pytest, and the notebooks under nbval
#   make lab         JupyterLab on the notebooks
#   make student     output-free copies of the notebooks for a class, in build/student (solutions stay out)
#   make bench       benchmarks/moe_layer.py and train_step.py
#   make ablation    the routing ablation's full grid (3 arms x 3 seeds, ~75 min on 2 cores) into results/ablation_small
#   make gpu-check   on a GPU machine, without setup: tools/gpu_check.py proves the GPU paths in under 5 minutes (benchmarks/gpu)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# the stamp is remade (a reinstall) only when the pins change
STAMP  := $(VENV)/.installed

.PHONY: setup notebooks test lab student bench ablation gpu-check clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else \
		f"the pins in requirements.txt need Python 3.11+, but {sys.executable} is {sys.version.split()[0]}: run make PYTHON=python3.11 ...")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python tools/check_env.py
	touch $(STAMP)

notebooks: setup
	MINI_MOST_SCALE=classroom $(BIN)/python tools/run_notebooks.py

test: setup
	$(BIN)/ruff check .
	MINI_MOST_CORPUS= MINI_MOST_SCALE=smoke $(BIN)/python -m pytest tests notebooks/[0-9][0-9]_*.ipynb \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=600 --timeout=1200 -q

lab: setup
	$(BIN)/jupyter lab notebooks

student: setup
	$(BIN)/python tools/student.py --out build/student

bench: setup  # rewrites the committed results: ~12 minutes and 13 GB of RAM on 2 cores; run it alone
	$(BIN)/python benchmarks/moe_layer.py --json benchmarks/moe_layer_cpu.json | tee benchmarks/moe_layer_cpu.txt
	$(BIN)/python benchmarks/train_step.py --json benchmarks/train_step_cpu.json | tee benchmarks/train_step_cpu.txt

ablation: setup  # rewrites the committed grid (notebook 05 and the README read it)
	$(BIN)/python -m mini_most.ablate --seeds 3 --out results/ablation_small

# no setup: a lent GPU machine has its own Python with torch and transformers, and no time for pip
GPU_PYTHON ?= python3
gpu-check:
	PYTHONPATH=. $(GPU_PYTHON) tools/gpu_check.py --out benchmarks/gpu

clean:
	rm -rf $(VENV) *.egg-info
