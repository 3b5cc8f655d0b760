"""Models on the corruption suite: scored once and kept beside the weights, reused only for the same weights, data
and suite; the ensemble's rows are the weighted mix of its members' stored probabilities, never a new prediction."""
import json
import shutil

import numpy as np
import pytest
import torch

from emo_utils import paths
from emo_utils.reports import robustness
from emo_utils.reports.corruptions import HELD_OUT, SEEN, condition_name, conditions, corrupt
from emo_utils.reports.ensemble import ensemble_probs
from emo_utils.core.inference import predict_logits, softmax
from emo_utils.core.checkpoint import load_trained
from emo_utils.core.data import load_dataset
from conftest import make_fer_zip
from synthetic import make_learnable_data
from test_report_readability import TABLE_BUDGET, markdown_tables, table_width
from tiny_model import tiny_model

NAMES = [robustness.CLEAN] + [condition_name(*c) for c in conditions()]


@pytest.fixture
def data():
    return make_learnable_data(train_per_class=30)


def other_weights(source, target, shift: float):
    """A copy of a model file with every weight moved by `shift`: another model, as far as a cache can tell."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    checkpoint["model"] = {k: v + shift if v.is_floating_point() else v for k, v in checkpoint["model"].items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, target)
    return target


@pytest.fixture
def model_file(tmp_path_factory, tmp_path):
    path = tmp_path / "reports" / "tiny" / "model.pt"  # a copy of its own: the suite's file is written beside it
    path.parent.mkdir(parents=True)
    shutil.copy(tiny_model(tmp_path_factory), path)
    return path


def test_the_suite_is_the_models_predictions_on_each_corrupted_split_and_is_kept_beside_it(model_file, data):
    scored = robustness.scored_corruptions(model_file, data)
    assert list(scored) == NAMES
    assert paths.corruptions_cache(model_file) == model_file.with_name("model_corruptions.npz")
    assert paths.corruptions_cache(model_file).exists()
    faces = data.split("test_private_clean")[0]
    model = load_trained(model_file).model
    for name in (robustness.CLEAN, "jpeg/3", "eyes_occluded/2"):
        shown = faces if name == robustness.CLEAN else corrupt(faces, *name.split("/")[:1], int(name[-1]))
        direct = softmax(predict_logits(model, shown, crop=44, tta="flip"))
        np.testing.assert_allclose(scored[name], direct, atol=1e-3)  # stored as float16


@pytest.mark.slow
def test_the_suite_is_read_back_for_the_same_weights_and_scored_again_for_others(model_file, data, monkeypatch):
    first = robustness.scored_corruptions(model_file, data)
    real_loader = robustness.load_for_scoring
    calls = []
    monkeypatch.setattr(robustness, "load_for_scoring", lambda *a, **k: calls.append(a) or real_loader(*a, **k))
    again = robustness.scored_corruptions(model_file, data)
    assert calls == []
    for name in NAMES:
        np.testing.assert_array_equal(again[name], first[name])

    other_weights(model_file, model_file, shift=0.05)  # other weights at the same path
    moved = robustness.scored_corruptions(model_file, data)
    assert len(calls) == 1
    assert not np.array_equal(moved[robustness.CLEAN], first[robustness.CLEAN])
    robustness.scored_corruptions(model_file, make_learnable_data(train_per_class=30, seed=3))  # other data
    assert len(calls) == 2
    robustness.scored_corruptions(model_file, make_learnable_data(train_per_class=30, seed=3), views="center")
    assert len(calls) == 3  # another view set is scored and kept beside the first
    with np.load(paths.corruptions_cache(model_file)) as saved:
        assert {f"flip/{n}" for n in NAMES} | {f"center/{n}" for n in NAMES} <= set(saved.files)


def test_a_corrupt_suite_file_is_scored_again(model_file, data):
    paths.corruptions_cache(model_file).write_bytes(b"not a zip")
    faces = len(data.split("test_private_clean")[1])
    assert robustness.scored_corruptions(model_file, data)["jpeg/1"].shape == (faces, 7)


def test_the_split_is_privatetest_clean_where_the_data_has_it(data):
    assert robustness.suite_split(data) == "test_private_clean"  # listed by clean_splits, not available_splits

    class WithoutPrivateTest:
        def available_splits(self):
            return ["train", "val", "test_all"]

        def clean_splits(self):
            return ["test_all_clean"]

    assert robustness.suite_split(WithoutPrivateTest()) == "test_all"


def write_ensemble(reports_dir, data, members: dict[str, float], views="flip"):
    folder = reports_dir / "ensemble"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps({"model": "ensemble", "provenance": {
        "data_sha256": data.sha256, "tta": views, "members": members}}))


@pytest.mark.slow
def test_the_ensemble_is_the_weighted_mix_of_its_members_stored_probabilities(model_file, data, monkeypatch):
    reports_dir = model_file.parents[1]
    other = other_weights(model_file, reports_dir / "other" / "model.pt", shift=0.03)
    other_weights(model_file, reports_dir / "tiny" / "seeds" / "1" / "model.pt", shift=-0.03)
    write_ensemble(reports_dir, data, {"tiny": 0.6, "other": 0.3999, "tiny/seed1": 0.0001})
    files = {"tiny": model_file, "other": other}
    result = robustness.corruption_suite(files, data, reports_dir=reports_dir)

    mix = robustness.ensemble_mix(data, reports_dir)
    assert mix.left_out == {"tiny/seed1": 0.0001} and mix.weights == {"tiny": 0.6 / 0.9999, "other": 0.3999 / 0.9999}
    labels = data.split("test_private_clean")[1]
    stored = {}
    for member, path in files.items():
        with np.load(paths.corruptions_cache(path)) as saved:
            stored[member] = {name: saved[f"flip/{name}"].astype(np.float32) for name in NAMES}
    table = result.table.set_index(["model", "corruption", "severity"])
    for name in NAMES:
        mixed = ensemble_probs([stored["tiny"][name], stored["other"][name]], [0.6, 0.3999])
        corruption, severity = (name, 0) if name == robustness.CLEAN else (name.split("/")[0], int(name[-1]))
        assert table.loc[("ensemble", corruption, severity), "accuracy"] == (mixed.argmax(1) == labels).mean()
    assert "the 1 left out weigh 0.01% in all" in result.note

    # The mix reads what is stored: with every member scored, the ensemble predicts nothing.
    monkeypatch.setattr(robustness, "load_for_scoring", lambda *a, **k: pytest.fail("predicted again"))
    again = robustness.corruption_suite(files, data, reports_dir=reports_dir)
    assert again.table.equals(result.table)

    # An ensemble fitted with each member under its own best views is mixed with every member under flip, and
    # the note says so; the mix is the same stored flip probabilities.
    write_ensemble(reports_dir, data, {"tiny": 0.6, "other": 0.3999, "tiny/seed1": 0.0001},
                   views="each member's best on val")
    own_views = robustness.corruption_suite(files, data, reports_dir=reports_dir)
    assert own_views.table.equals(result.table)
    assert "under flip (its weights were fitted with each member under each member's best on val" in own_views.note
    assert "fitted with" not in result.note

    # So is one fitted with every member under the centre crop: the suite's one view set, read from the stored
    # flip probabilities, not every member scored again under centre views.
    write_ensemble(reports_dir, data, {"tiny": 0.6, "other": 0.3999, "tiny/seed1": 0.0001}, views="center")
    centre_fitted = robustness.corruption_suite(files, data, reports_dir=reports_dir)
    assert centre_fitted.table.equals(result.table)
    assert "under flip (its weights were fitted with each member under center" in centre_fitted.note


def test_the_summary_and_the_figure_say_what_they_hold(model_file, data):
    result = robustness.corruption_suite({"tiny": model_file}, data, reports_dir=model_file.parents[1])
    row = result.summary.loc["tiny"]
    corrupted = result.table[result.table.corruption != robustness.CLEAN]
    assert row["views"] == "flip" and row["mean corruption accuracy"] == round(corrupted.accuracy.mean(), 4)
    assert row["relative robustness"] == round(corrupted.accuracy.mean() / row["clean"], 4)
    for group, types in (("seen", SEEN), ("held out", HELD_OUT)):
        assert row[group] == round(corrupted[corrupted.corruption.isin(types)].accuracy.mean(), 4)
    assert list(result.summary.columns[-10:]) == [*SEEN, *HELD_OUT]  # each type's mean, seen types first
    assert ("PrivateTest, deduplicated (test_private_clean, 35 faces); every model under centre + mirror (flip)"
            in result.note)
    figure = robustness.plot_corruption_curves(result)
    assert "tiny (flip) on PrivateTest, deduplicated (35 faces)" in figure._suptitle.get_text()
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["tiny (flip)"]
    titles = [ax.get_title() for ax in figure.axes if ax.has_data()]
    assert titles[0] == "gaussian noise (seen)" and titles[-1] == "random square (held out)" and len(titles) == 10


def test_the_summary_as_markdown_is_two_tables_in_percent_under_short_names_each_within_a_page(model_file, data):
    summary = robustness.corruption_suite({"tiny": model_file}, data, reports_dir=model_file.parents[1]).summary
    # The longest names a model may carry here: a robust recipe's row beside the widest report names.
    summary = summary.rename(index={"tiny": "mini_xception_robust"})
    text = robustness.summary_markdown(summary)
    headline, per_type = markdown_tables(text)
    assert headline[0] == ["model", "clean", "mean corrupted", "seen", "held out", "ratio"]
    assert per_type[0] == ["model", "noise", "blur", "jpeg", "low res", "rotate",
                           "bright", "contrast", "eyes", "mouth", "square"]
    cells = dict(zip(headline[0], headline[1]))
    assert cells["clean"] == f"{100 * summary.loc['mini_xception_robust', 'clean']:.1f}"
    assert cells["held out"] == f"{100 * summary.loc['mini_xception_robust', 'held out']:.1f}"
    assert cells["ratio"] == f"{summary.loc['mini_xception_robust', 'relative robustness']:.2f}"
    assert dict(zip(per_type[0], per_type[1]))["rotate"] == f"{100 * summary.loc['mini_xception_robust', 'rotation']:.1f}"
    assert all(table_width(table) <= TABLE_BUDGET for table in (headline, per_type))
    assert "seen: noise, blur, jpeg, low res, rotate" in text and "held out: bright, contrast, eyes, mouth, square" in text


@pytest.mark.slow
def test_a_robust_models_folder_is_a_row_and_drawn_beside_its_base(model_file, data):
    reports_dir = model_file.parents[1]
    other_weights(model_file, reports_dir / "tiny_robust" / "model.pt", shift=0.02)  # as the lead adds one
    for name in ("a", "b", "c", "d", "e", "f"):
        other_weights(model_file, reports_dir / name / "model.pt", shift=0.01 * (ord(name) - 96))
    result = robustness.corruption_suite(paths.trained_models(reports_dir), data, reports_dir=reports_dir)
    assert {"tiny", "tiny_robust"} <= set(result.summary.index) and len(result.summary) == 8
    shown = robustness.figure_models(result.summary)
    assert {"tiny", "tiny_robust"} <= set(shown) and len(shown) == len(set(shown)) >= 6
    figure = robustness.plot_corruption_curves(result, models=shown)
    styles = {t.get_label(): t.get_linestyle() for t in figure.axes[0].get_lines()}
    assert styles["tiny_robust (flip)"] == "--" and styles["tiny (flip)"] == "-"


def test_an_ensemble_fitted_on_other_data_or_with_a_member_missing(model_file, data):
    reports_dir = model_file.parents[1]
    write_ensemble(reports_dir, make_learnable_data(train_per_class=30, seed=5), {"tiny": 1.0})
    assert robustness.ensemble_mix(data, reports_dir) is None  # its weights say nothing about this data
    write_ensemble(reports_dir, data, {"tiny": 0.5, "gone": 0.5})
    with pytest.raises(FileNotFoundError, match="names members without weights .*: gone; run notebook 30 again"):
        robustness.ensemble_mix(data, reports_dir)


def test_the_command_line_scores_every_model_and_names_a_bad_argument(model_file, tmp_path, capsys):
    archive = make_fer_zip(tmp_path, n_train=4, n_public=2, n_private=2)
    reports_dir = model_file.parents[1]
    assert robustness.main(["--data", str(archive), "--reports-dir", str(reports_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "PrivateTest, deduplicated (test_private_clean, " in out and "tiny" in out
    assert paths.corruptions_cache(model_file).exists()
    for argv, message in ((["--data", str(tmp_path / "missing.zip")], "missing.zip (the path given) holds no dataset"),
                          (["--device", "tpu"], "--device 'tpu': choose cuda or cpu"),
                          (["--data", str(archive), "--reports-dir", str(tmp_path / "empty")],
                           "empty holds no trained model and no ensemble to score on the corruption suite")):
        with pytest.raises(SystemExit) as stop:
            robustness.main(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err


def test_the_sample_is_stratified_the_same_for_a_seed_and_the_whole_split_when_small():
    # PrivateTest deduplicated's class counts, shuffled: 2,962 faces, disgust rare.
    labels = np.random.default_rng(1).permutation(np.repeat(np.arange(7), [400, 45, 410, 720, 480, 320, 587]))
    sample = robustness.stratified_sample(labels, 1000, seed=0)
    assert len(sample) == len(np.unique(sample)) == 1000 and (np.diff(sample) > 0).all()
    expected = np.bincount(labels) * 1000 / len(labels)
    assert (np.abs(np.bincount(labels[sample]) - expected) < 1).all()  # every class in proportion, disgust too
    np.testing.assert_array_equal(robustness.stratified_sample(labels, 1000, seed=0), sample)
    assert not np.array_equal(robustness.stratified_sample(labels, 1000, seed=1), sample)
    np.testing.assert_array_equal(robustness.stratified_sample(labels[:50], 1000, seed=0), np.arange(50))


def test_the_suite_scores_its_sample_of_the_split_and_says_so(model_file, data, monkeypatch):
    monkeypatch.setattr(robustness, "SUITE_FACES", 14)  # of the 35 faces of the synthetic PrivateTest
    sample = robustness.suite_sample(data, "test_private_clean")
    assert len(sample) == 14 and data.split_mask("test_private_clean")[sample].all()
    assert (np.bincount(data.labels[sample]) == 2).all()  # 5 faces of each class in the split: 2 of each
    scored = robustness.scored_corruptions(model_file, data)
    direct = softmax(predict_logits(load_trained(model_file).model, data.images[sample], crop=44, tta="flip"))
    np.testing.assert_allclose(scored[robustness.CLEAN], direct, atol=1e-3)

    result = robustness.corruption_suite({"tiny": model_file}, data, reports_dir=model_file.parents[1])
    assert (result.faces, result.split_faces) == (14, 35)
    clean = result.table.set_index("corruption").loc[robustness.CLEAN, "accuracy"]
    assert clean == (direct.argmax(1) == data.labels[sample]).mean()
    assert result.note.startswith("14 of the 35 faces of PrivateTest, deduplicated (test_private_clean, a stratified "
                                  "sample, seed 0);")
    title = robustness.plot_corruption_curves(result)._suptitle.get_text()
    assert "tiny (flip) on 14 of the 35 faces of PrivateTest, deduplicated (a stratified sample, seed 0)" in title


def test_another_sample_is_scored_again(model_file, data, monkeypatch):
    whole = robustness.cache_key(model_file, data, "test_private_clean")
    robustness.scored_corruptions(model_file, data)
    monkeypatch.setattr(robustness, "SUITE_FACES", 14)
    fourteen = robustness.cache_key(model_file, data, "test_private_clean")
    real_sample = robustness.suite_sample
    monkeypatch.setattr(robustness, "suite_sample", lambda d, split: np.sort(real_sample(d, split) + 2))
    assert len({whole, fourteen, robustness.cache_key(model_file, data, "test_private_clean")}) == 3  # other faces
    monkeypatch.setattr(robustness, "suite_sample", real_sample)

    real_loader = robustness.load_for_scoring
    calls = []
    monkeypatch.setattr(robustness, "load_for_scoring", lambda *a, **k: calls.append(a) or real_loader(*a, **k))
    assert robustness.scored_corruptions(model_file, data)["jpeg/1"].shape == (14, 7)
    assert len(calls) == 1  # the whole split's file is not read for the sample


def test_without_the_ensemble_its_members_are_not_scored(model_file, data):
    reports_dir = model_file.parents[1]
    member = other_weights(model_file, reports_dir / "tiny" / "seeds" / "1" / "model.pt", shift=-0.03)
    write_ensemble(reports_dir, data, {"tiny": 0.5, "tiny/seed1": 0.5})
    alone = robustness.corruption_suite({"tiny": model_file}, data, reports_dir=reports_dir, ensemble=False)
    assert set(alone.table.model) == {"tiny"} and "ensemble" not in alone.note
    assert not paths.corruptions_cache(member).exists()
    mixed = robustness.corruption_suite({"tiny": model_file}, data, reports_dir=reports_dir)
    assert set(mixed.table.model) == {"tiny", "ensemble"} and paths.corruptions_cache(member).exists()


def test_the_command_line_scores_the_models_named_and_refuses_an_unknown_one(model_file, tmp_path, capsys):
    archive = make_fer_zip(tmp_path, n_train=4, n_public=2, n_private=2)
    reports_dir = model_file.parents[1]
    other = other_weights(model_file, reports_dir / "other" / "model.pt", shift=0.03)
    member = other_weights(model_file, reports_dir / "tiny" / "seeds" / "1" / "model.pt", shift=-0.03)
    write_ensemble(reports_dir, load_dataset(archive, use_cache=False), {"tiny": 0.5, "tiny/seed1": 0.5})
    assert robustness.main(["--data", str(archive), "--reports-dir", str(reports_dir), "--device", "cpu",
                            "--models", "tiny", "--no-ensemble"]) == 0
    assert paths.corruptions_cache(model_file).exists()
    assert not paths.corruptions_cache(other).exists() and not paths.corruptions_cache(member).exists()
    capsys.readouterr()
    # The names are checked before any work: a missing dataset is not reached.
    with pytest.raises(SystemExit) as stop:
        robustness.main(["--data", str(tmp_path / "missing.zip"), "--reports-dir", str(reports_dir),
                         "--models", "tiny", "nope"])
    assert stop.value.code == 2
    assert f"--models: no trained model nope under {reports_dir}; choose from other, tiny" in capsys.readouterr().err


def test_a_robust_chapter_reads_its_recipe_seeds_and_ablations_on_the_suite(model_file, data):
    from emo_utils.core.config import TrainConfig
    from emo_utils.reports.chapter import Chapter

    report_dir = model_file.parent
    seed = other_weights(model_file, report_dir / "seeds" / "1" / "model.pt", shift=-0.03)
    other = other_weights(model_file, paths.ablation_model_path(report_dir, "more corrupted"), shift=0.02)
    other_seed = other_weights(model_file, paths.seed_model_path(paths.run_seed_dir(report_dir, "more corrupted"), 2),
                               shift=0.04)
    robust = TrainConfig(model="tiny", augment=dict(crop=44, corrupt=0.5))
    params = {"robust_ablations": {"more corrupted": {"epochs": 3}, "never trained": {"epochs": 4}}}
    chapter = Chapter(params, "robust", robust, data, report_dir, report_dir / "run", published=True, trial=False)
    table = chapter.corruption_table()
    suite = robustness.corruption_suite({"this recipe": model_file, "this recipe, seed 1": seed,
                                         "more corrupted": other, "more corrupted, seed 2": other_seed},
                                        data, ensemble=False)
    assert robustness.summary_markdown(suite.summary) in table  # the same rows notebook 20 would print
    assert "never trained" not in table  # an ablation without weights is left out, not scored
    for name, rows in {"This recipe": ["this recipe", "this recipe, seed 1"],
                       "More corrupted": ["more corrupted", "more corrupted, seed 2"]}.items():
        both = suite.summary.loc[rows]  # each run's seeds have a mean of their own
        assert (f"{name}, mean of 2 seeds: clean {100 * both['clean'].mean():.1f}, mean corrupted "
                f"{100 * both['mean corruption accuracy'].mean():.1f}") in table
    plain = Chapter(params, "cpu", TrainConfig(model="tiny", augment=dict(crop=44)), data, report_dir,
                    report_dir / "run", published=True, trial=False)
    assert plain.corruption_table() == ""  # a recipe without corruptions: notebook 20 has its row


def test_every_fine_tuned_run_with_seeds_is_set_against_its_base_seed_by_seed(model_file, data, tmp_path):
    from emo_utils.core.config import TrainConfig
    from emo_utils.reports import ablation
    from emo_utils.reports.chapter import Chapter

    def seeded(target, seed, shift):  # a model file that says which seed trained it, as seed_rows reads it
        path = other_weights(model_file, target, shift)
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        checkpoint["config"]["seed"] = seed
        torch.save(checkpoint, path)
        return path

    base = tmp_path / "base"
    base_model = seeded(base / "model.pt", 0, 0.0)
    seeded(paths.seed_model_path(base, 1), 1, 0.01)
    report_dir, name = model_file.parent, "more corrupted"
    seeded(report_dir / "seeds" / "1" / "model.pt", 1, -0.03)
    seeded(paths.ablation_model_path(report_dir, name), 0, 0.02)
    seeded(paths.seed_model_path(paths.run_seed_dir(report_dir, name), 1), 1, 0.04)
    # An ablation that fine-tunes another base (init_weights changed) is set against that base's seeds.
    wide, other_base = tmp_path / "wide", "from another base"
    wide_model = seeded(wide / "model.pt", 0, 0.05)
    seeded(paths.seed_model_path(wide, 1), 1, 0.06)
    seeded(paths.ablation_model_path(report_dir, other_base), 0, -0.01)
    seeded(paths.seed_model_path(paths.run_seed_dir(report_dir, other_base), 1), 1, 0.03)
    tuned = TrainConfig(model="tiny", augment=dict(crop=44, corrupt=0.5), init_weights=str(base_model))
    params = {"robust_ablations": {other_base: {"init_weights": str(wide_model)}}}
    chapter = Chapter(params, "robust", tuned, data, report_dir, report_dir / "run", published=True, trial=False)
    seeds = {run: ablation.seed_rows(paths.run_seed_dir(report_dir, run), data)
             for run in ("this recipe", name, other_base)}
    lines = chapter.against_base(seeds)
    for run, start in {"this recipe": base, name: base, other_base: wide}.items():
        # one line per run, each of its seeds against its base's seed of the same number
        start_seeds = {row["run"]: row["test_private"] for row in ablation.seed_rows(start, data)}
        [line] = [line for line in lines
                  if line.startswith(f"- **{run}** against **the model it fine-tunes ({start.name})**")
                  and "PrivateTest deduplicated" not in line]
        ours = {row["run"]: row["test_private"] for row in seeds[run] if row["run"].startswith("seed ")}
        assert "seed by seed (seed 0, seed 1)" in line
        differences = [100 * (ours[seed] - start_seeds[seed]) for seed in ("seed 0", "seed 1")]
        assert f"(per seed {differences[0]:+.2f}, {differences[1]:+.2f})" in line
    experiment = Chapter({}, "robust", tuned, data, report_dir, report_dir / "run", published=False, trial=False)
    assert experiment.against_base(seeds) == []  # an experiment's numbers are not set against reports/
