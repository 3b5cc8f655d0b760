"""The training command line: one training notebook's recipe, trained where `make reports` will find it.

    python -m emo_utils.zoo.train notebooks/09_train_vgg_gap.ipynb [--budget full] [--seed 1] [--set epochs=5]
    torchrun --nproc_per_node=8 -m emo_utils.zoo.train notebooks/09_train_vgg_gap.ipynb --budget full

The zoo runs one of these per run; under torchrun every rank runs it (core/distributed.py).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..core import data as fer, datasets, distributed
from ..core.config import TrainConfig
from ..core.readers import DataError
from ..core.train import COMPILE_MODES, check_run_inputs, train
from ..core.trial import trial_subset
from ..paths import keyed_run_dir, model_dirs, model_file, model_folder, roots
from ..recipes import NotebookError, chapter_config, home_budget, notebook_parameters, parse_sets, with_changes


def main(argv=None) -> int:
    """Train with the recipe in a notebook's parameters cell, e.g. on 8 GPUs:
    torchrun --nproc_per_node=8 -m emo_utils.zoo.train notebooks/09_train_vgg_gap.ipynb --budget full
    then `make reports NB=09 PARAMS="-p budget full"` evaluates the model it wrote instead of retraining.
    Or train a config written as JSON (what the zoo hands each of its runs): --config run.json --data D
    --model-path M --run-dir R."""
    parser = argparse.ArgumentParser(prog="python -m emo_utils.zoo.train", description=main.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path, nargs="?", help="a training notebook; its parameters cell gives the recipe")
    parser.add_argument("--config", type=Path, help="a TrainConfig as JSON, instead of a notebook's recipe")
    parser.add_argument("--budget", choices=["cpu", "full", "robust"], help="which recipe (default: the notebook's budget)")
    parser.add_argument("--seed", type=int, help="default: the notebook's seed")
    parser.add_argument("--data", help="the dataset's file or folder (default: the notebook's data_path; for FER2013 "
                        "then the finder)")
    parser.add_argument("--dataset", help="which dataset (datasets.py: fer2013, ferplus, rafdb, affectnet, ckplus, or "
                        "a name of your own for a train/ + test/ folder; default: the notebook's dataset, else fer2013)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a recipe field, VALUE a Python literal (e.g. --set epochs=5); repeatable")
    parser.add_argument("--report-dir", type=Path, help="where model.pt goes (default: reports/<model>)")
    parser.add_argument("--model-path", type=Path, help="the finished model's file (default: REPORT_DIR/model.pt)")
    parser.add_argument("--run-dir", type=Path, help="checkpoints (default: runs/<model>)")
    parser.add_argument("--retrain", action="store_true", help="train even if a matching model.pt exists")
    parser.add_argument("--trial", action="store_true", help="train on the trial's subset of the data "
                        "(core/trial.py); with a notebook, its trial schedule too")
    parser.add_argument("--compile", choices=COMPILE_MODES, help="torch.compile the training step (default: "
                        "COMPILE_BY_DEFAULT, else off); reduce-overhead adds CUDA graphs")
    args = parser.parse_args(argv)
    if (args.notebook is None) == (args.config is None):
        parser.error("give a training notebook or --config FILE.json, not both")
    if args.config and not (args.model_path and args.run_dir):
        parser.error("--config needs --model-path and --run-dir: a bare config does not say where its run goes")

    try:
        sets = parse_sets(args.set)
    except NotebookError as e:
        parser.error(str(e))
    if args.config:
        try:
            config = TrainConfig.from_dict({**json.loads(args.config.read_text()), **sets})
        except (OSError, ValueError, TypeError) as e:  # missing, not JSON, or fields TrainConfig does not have
            parser.error(f"--config {args.config}: {e}. Write it with the zoo, or as json.dumps(asdict(config)).")
        data_path, model_path, run_dir = args.data, args.model_path, args.run_dir
    else:
        params = notebook_parameters(args.notebook)
        try:
            config = chapter_config(params, args.budget, args.seed, sets, args.dataset, trial=args.trial)
        except ValueError as e:
            parser.error(str(e))
        data_path = args.data or params.get("data_path")
        # reports/ and runs/ under REPO_ROOT as it is now, not at import: a test that moves REPO_ROOT writes there.
        folder = model_folder(config.model, args.budget or params.get("budget", "cpu"), home_budget(params),
                              config.dataset)
        report_dir, run_dir = model_dirs(folder, *roots(fer.REPO_ROOT))
        run_dir = args.run_dir or keyed_run_dir(run_dir, config)
        model_path = args.model_path or model_file(args.report_dir or report_dir)
    try:
        data = datasets.load_named(config.dataset, data_path, config.label_mode)
    except DataError as e:
        parser.error(str(e).splitlines()[0])
    if args.trial:
        data = trial_subset(data)
        if config.distill_targets:  # the teacher's file covers the whole data's training faces, not the subset's
            print(f"trial: distillation left out ({config.distill_targets} holds the teacher's outputs on the "
                  "whole data's training faces)")
            config = with_changes(config, {"distill_targets": ""})
    try:
        check_run_inputs(config, data)
    except (ValueError, FileNotFoundError) as e:  # DataError included: the data, refit or teacher, named with the fix
        parser.error(str(e).splitlines()[0])
    if distributed.is_main():
        model_path.parent.mkdir(parents=True, exist_ok=True)
    result = train(config, data, run_dir, retrain=args.retrain, model_path=model_path, compile_mode=args.compile)
    if distributed.is_main():
        print(json.dumps({k: v for k, v in result.meta.items()}, indent=1, default=str))
        print(f"model: {model_path}")
    if distributed.active():
        distributed.end_rank(0)  # never returns: see end_rank for the abort it avoids
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
