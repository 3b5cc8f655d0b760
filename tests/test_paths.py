"""paths.py names every file under reports/ and runs/: each name for a few inputs (FER2013 and another dataset,
the notebook's own budget and the other, a run name with punctuation), and no other module of emo_utils spells
an "ablations", "seeds" or "runs" folder itself."""
import ast
from pathlib import Path

import pytest

import emo_utils
from emo_utils import paths
from emo_utils.core.data import REPO_ROOT
from emo_utils.core.readers import DataError

PATH_PARTS = {"ablations", "seeds", "runs"}


def test_the_roots_are_the_repository_s_or_an_output_folder_s(tmp_path):
    assert (paths.REPORTS_DIR, paths.RUNS_DIR) == (REPO_ROOT / "reports", REPO_ROOT / "runs")
    assert paths.roots(tmp_path) == (tmp_path / "reports", tmp_path / "runs")


def test_a_model_s_folder_for_its_budget_and_dataset():
    assert paths.model_folder("vgg_gap", "cpu") == "vgg_gap"  # the notebook's own budget: no suffix
    assert paths.model_folder("vgg_gap", "full") == "vgg_gap_full"
    assert paths.model_folder("vgg_fer", "full", home_budget="full") == "vgg_fer"  # 04, 05 report full at home
    assert paths.model_folder("vgg_fer", "cpu", home_budget="full") == "vgg_fer_cpu"
    assert paths.model_folder("vgg_gap", "full", dataset="fer2013") == "vgg_gap_full"  # FER2013 stays at the top
    assert paths.model_folder("vgg_gap", "cpu", dataset="ferplus") == "ferplus/vgg_gap"
    assert paths.model_folder("vgg_gap", "full", dataset="my_faces") == "my_faces/vgg_gap_full"
    with pytest.raises(DataError, match="lower-case letters"):
        paths.model_folder("vgg_gap", "cpu", dataset="../elsewhere")


def test_a_model_s_report_and_run_folders(tmp_path):
    assert paths.model_dirs("vgg_gap_full") == (REPO_ROOT / "reports" / "vgg_gap_full",
                                                REPO_ROOT / "runs" / "vgg_gap_full")
    assert paths.model_dirs("ferplus/vgg_gap", tmp_path / "r", tmp_path / "c") == (
        tmp_path / "r" / "ferplus" / "vgg_gap", tmp_path / "c" / "ferplus" / "vgg_gap")
    assert paths.model_file(tmp_path / "r" / "vgg_gap") == tmp_path / "r" / "vgg_gap" / "model.pt"


def test_ablations_and_seeds_sit_in_their_run_s_folders(tmp_path):
    report, run = tmp_path / "reports" / "vgg_gap", tmp_path / "runs" / "vgg_gap"
    assert paths.slug("30-minute budget") == "30_minute_budget"
    assert paths.slug("No EMA (raw weights), 2x!") == "no_ema_raw_weights_2x"
    assert paths.ablation_model_path(report, "No EMA (raw weights)") == (
        report / "ablations" / "no_ema_raw_weights" / "model.pt")
    assert paths.ablation_run_dir(run, "No EMA (raw weights)") == run / "ablations" / "no_ema_raw_weights"
    assert paths.seed_model_path(report, 2) == report / "seeds" / "2" / "model.pt"
    assert paths.seed_run_dir(run, 2) == run / "seed2"
    assert paths.run_seed_dir(report, paths.MAIN_RUN) == report  # the recipe's seeds beside the zoo's
    assert paths.run_seed_dir(report, "30-minute budget") == report / "ablations" / "30_minute_budget"
    assert paths.seed_model_path(paths.run_seed_dir(report, "30-minute budget"), 1) == (
        report / "ablations" / "30_minute_budget" / "seeds" / "1" / "model.pt")
    for seed in (2, 1):
        paths.seed_model_path(report, seed).parent.mkdir(parents=True)
        paths.seed_model_path(report, seed).write_bytes(b"")
    assert paths.seed_model_paths(report) == [paths.seed_model_path(report, 1), paths.seed_model_path(report, 2)]


def test_the_files_beside_a_model(tmp_path):
    model = tmp_path / "vgg_gap" / "model.pt"
    assert paths.views_cache(model) == tmp_path / "vgg_gap" / "model_views.npz"
    assert paths.views_cache(str(model), "raw_model") == tmp_path / "vgg_gap" / "model_raw_model_views.npz"
    assert paths.corruptions_cache(model) == tmp_path / "vgg_gap" / "model_corruptions.npz"
    assert paths.ablation_record(tmp_path / "vgg_gap") == tmp_path / "vgg_gap" / "ablations.json"


def spelled_path_parts(source: str) -> list[tuple[int, str]]:
    """(line, text) of each string constant naming an "ablations", "seeds" or "runs" folder where it joins a path:
    an operand of `/`, or an argument of Path(...), joinpath, glob or rglob."""
    def named(node) -> bool:
        return (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and bool(PATH_PARTS & set(node.value.split("/"))))

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            found += [(n.lineno, n.value) for n in (node.left, node.right) if named(n)]
        elif isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            if name in ("Path", "joinpath", "glob", "rglob"):
                found += [(n.lineno, n.value) for n in node.args if named(n)]
    return found


def test_the_scan_finds_a_folder_spelled_outside_paths():
    assert spelled_path_parts('run_dir = root / "runs" / folder') == [(1, "runs")]
    assert spelled_path_parts('p = Path(report_dir, "ablations")\nq = d.glob("seeds/*/model.pt")') == [
        (1, "ablations"), (2, "seeds/*/model.pt")]
    assert spelled_path_parts('record["runs"] = runs\nname = "seeds"') == []  # a key or a word is no path


def test_no_module_but_paths_spells_a_reports_or_runs_folder():
    package = Path(emo_utils.__file__).parent
    spelled = {str(path.relative_to(package)): found for path in sorted(package.rglob("*.py"))
               if path != package / "paths.py" and (found := spelled_path_parts(path.read_text()))}
    assert spelled == {}, "ask emo_utils.paths for these folders"


def test_a_fine_tunes_further_seeds_start_from_their_base_models_run_of_that_seed(tmp_path, monkeypatch):
    from emo_utils.core.config import TrainConfig
    from emo_utils.recipes import with_seed
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    for seed_dir in ("", "seeds/1/"):
        (tmp_path / f"reports/base/{seed_dir}model.pt").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"reports/base/{seed_dir}model.pt").write_bytes(b"weights")
    fine_tune = TrainConfig(model="mini_xception", init_weights="reports/base/model.pt", epochs=3)
    assert with_seed(fine_tune, 1).init_weights == "reports/base/seeds/1/model.pt"
    assert with_seed(fine_tune, 1).seed == 1 and with_seed(fine_tune, 1).epochs == 3
    assert with_seed(fine_tune, 2).init_weights == "reports/base/model.pt"  # no run of seed 2: the same base
    assert with_seed(fine_tune, 1, {"epochs": 5}).epochs == 5  # an ablation's seed
    assert with_seed(TrainConfig(model="mini_xception"), 1).init_weights == ""  # not a fine-tune


def test_a_field_added_to_the_config_keeps_the_run_folders_of_runs_in_progress():
    import hashlib
    import json
    from dataclasses import asdict

    from emo_utils.core.config import TrainConfig
    config = TrainConfig(model="vgg_gap", epochs=10, seed=3)
    # The key as it was computed before the later fields existed: the JSON of every other field.
    before = {k: v for k, v in asdict(config).items() if k not in paths.UNKEYED_AT_DEFAULT}
    old_key = hashlib.sha256(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()[:10]
    assert paths.config_key(config) == old_key
    for field, default in paths.UNKEYED_AT_DEFAULT.items():
        assert getattr(TrainConfig(), field) == default
        changed = TrainConfig(**{**asdict(config), field: 1.0 if default == 0.0 else 0.0})
        assert paths.config_key(changed) != old_key  # once set, the field is part of what the run is
