# Everything starts here: `make reports` and `make test` bootstrap their own environment.
#   make setup                 create .venv (torch 2.14.1 / torchvision 0.29.1 pinned), the Jupyter kernel, and the
#                              git filter that commits notebooks/ without outputs (nbstripout; .gitattributes)
#   make test                  run the test suite (synthetic data; real-FER2013 checks skip when the zip is absent)
#   make test-fast             the inner loop: every test not marked slow (no notebook, subprocess or real data), < 1 min
#   make reports               execute every notebook with papermill and publish: reports/ (HTML, per-model READMEs,
#                              leaderboard) and the README's results table; nothing else writes them
#   make reports NB=01         run only the notebooks whose name starts with 01
#   make reports RETRAIN=1     retrain instead of re-evaluating committed weights
#   make reports NB=02 TRIAL=1                  a two-minute trial of notebook 02, under experiments/ (never published)
#   make reports NB=09 SET="epochs=5 lr=0.1"    recipe fields changed: an experiment, under experiments/
#   make reports NB=02 PARAMS="-p dataset my_faces -p data_path data/my_faces"   papermill parameters passed through
#   make zoo                   train every training notebook's recipe, several runs at a time (emo_utils/zoo/runner.py)
#   make zoo NB="02 09" ARGS="--budget full --seeds 09=0,1,2"   only those notebooks; ARGS passed through
#   make zoo NB=02 EXECUTOR=slurm ARGS="--partition gpu --gpus-per-run 1"   each run a SLURM job (docs/design.md)
#   make zoo NB=02 DATASET=rafdb DATA=/data/RAF-DB                            another dataset (datasets.py names)
#   make zoo NB=02 ARGS="--trial"  or  ARGS="--set epochs=5"    a trial; a recipe field changed, as SET above
#   make zoo-rental DATA=fer2013.zip OUT=zoo_out [CAP=15]        on a rented GPU: full recipes, three flagship
#                              seeds and the ablations, stopped after CAP minutes; copy OUT/reports/ back into reports/
#   make lab                   open JupyterLab on the project's kernel
#   make bench                 run the benchmarks in benchmarks/

VENV    := .venv
PY      := $(VENV)/bin/python
KERNEL  := emo-fer
STAMP   := $(VENV)/.setup-done

.PHONY: setup test test-fast reports zoo zoo-rental lab bench clean-cache

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	# MTCNN (emo-predict --detector mtcnn): its pins (torch<2.3, numpy<2) are stale, so without its dependencies;
	# it imports only torch, torchvision, numpy and Pillow, installed above (tests/test_detectors.py checks it).
	$(PY) -m pip install -q --no-deps facenet-pytorch==2.6.0
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (emo-fer)" >/dev/null
	$(PY) -m emo_utils.reports.nbform --install-filter
	@touch $@

# Two workers, one thread each (tests/conftest.py), each test file on one worker (the SLURM tests share a cluster).
test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile tests

test-fast: setup
	$(PY) -m pytest -q -n 2 --dist loadfile -m 'not slow' tests

reports: setup
	$(PY) -m emo_utils.reports --kernel $(KERNEL) $(if $(NB),--only $(NB)) $(if $(RETRAIN),--retrain) \
		$(if $(TRIAL),--trial) $(foreach s,$(SET),--set $(s)) $(PARAMS)

zoo: setup
	$(PY) -m emo_utils.zoo $(NB) $(if $(EXECUTOR),--executor $(EXECUTOR)) $(if $(DATASET),--dataset $(DATASET)) \
		$(if $(DATA),--data $(DATA)) $(ARGS)

# Mini-Xception first: its early-stopping run is the longest at issue #19's 10 s/epoch; then the flagship's seeds.
RENTAL_ORDER := 02 09 03 04 05 06 07 08
zoo-rental: setup
	@test -n "$(DATA)" -a -n "$(OUT)" || { echo "usage: make zoo-rental DATA=path/to/fer2013.zip OUT=folder [CAP=minutes] [ARGS=...]"; exit 2; }
	$(PY) -m emo_utils.zoo $(RENTAL_ORDER) --budget full --seeds 09=0,1,2 --data $(DATA) --out $(OUT) --time-cap $(or $(CAP),15) $(ARGS)

lab: setup
	$(VENV)/bin/jupyter lab notebooks

bench: setup
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/predict_latency.py
	$(PY) benchmarks/torchrun_exits.py

clean-cache:
	rm -rf .cache
