"""benchmarks/pipeline_frames.py places each face where its truth says, once, counts matches as it should, and
writes a section a reader takes in on a 1000-px page: an accuracy table and a speed table, emo-predict's defaults
in bold, no machine path, the commit the run started with."""
import importlib.util
import json

import numpy as np
import pytest

from emo_utils.core.data import REPO_ROOT
from test_report_readability import markdown_problems, markdown_tables

spec = importlib.util.spec_from_file_location("pipeline_frames", REPO_ROOT / "benchmarks" / "pipeline_frames.py")
pipeline_frames = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pipeline_frames)


def test_faces_are_pasted_where_the_truth_says_each_once():
    levels = np.arange(20, 240, 22, dtype=np.uint8)  # each face one flat grey level, told apart by it
    faces_u8 = np.repeat(levels[:, None, None], 48, axis=1).repeat(48, axis=2)
    frames, boxes, which, angles = pipeline_frames.make_frames(faces_u8, empty=3, max_rotation=15, seed=1)
    assert sorted(np.concatenate(which).tolist()) == list(range(len(levels)))
    assert [len(b) for b in boxes[-3:]] == [0, 0, 0] and all(len(b) for b in boxes[:-3])
    for frame, frame_boxes, indices in zip(frames, boxes, which):
        assert frame.shape == (480, 640, 3)
        for (x, y, w, h), index in zip(frame_boxes, indices):
            assert w == h and 40 <= w <= 200 and x + w <= 640 and y + h <= 480
            centre = frame[y + w // 3:y + 2 * w // 3, x + w // 3:x + 2 * w // 3].astype(float)
            assert abs(centre.mean() - levels[index]) < 3, (index, centre.mean())


def test_a_detection_counts_for_one_face_and_the_rest_are_false():
    truth = np.array([(0, 0, 100, 100), (300, 0, 100, 100)])
    found = np.array([(5, 5, 100, 100), (10, 0, 90, 90), (600, 400, 30, 30)])
    matched, false = pipeline_frames.match(truth, found)
    assert matched.tolist() == [0, -1] and false == 2


def test_the_command_line_shows_file_arguments_by_name():
    shown = pipeline_frames.shown_command(["--accuracy-from", "/tmp/w30/acc_haar.json|/work/x/acc_dlib.json",
                                           "--accuracy-to=/tmp/a.json", "--only", "hog|cnn", "--write"])
    assert shown == ("python benchmarks/pipeline_frames.py --accuracy-from acc_haar.json|acc_dlib.json "
                     "--accuracy-to=a.json --only hog|cnn --write")


def test_each_of_emo_predicts_settings_is_one_candidate_with_its_crop_and_k():
    found = {setting: [(name, every) for name, keywords, everies in pipeline_frames.CANDIDATES for every in everies
                       if setting in pipeline_frames.defaults_of(keywords, align, every)]
             for setting, align in ((s, v["align"]) for s, v in pipeline_frames.SETTINGS.items())}
    assert all(len(rows) == 1 for rows in found.values()), found


# ---------------------------------------------------------------- a tiny run, written

class FakeData:
    """Twenty flat grey faces as test_private_clean, all of class 0."""
    sha256 = "0123456789abcdef"

    def clean_splits(self):
        return ["test_private_clean"]

    def split(self, name):
        assert name == "test_private_clean"
        faces = np.repeat(np.linspace(40, 220, 20, dtype=np.uint8)[:, None, None], 48, 1).repeat(48, 2)
        return faces, np.zeros(20, np.int64)


class FakeClassifier:
    def predict_proba(self, faces):
        probabilities = np.zeros((len(faces), 7))
        probabilities[:, 0] = 1
        return probabilities


# emo-predict's settings as the tiny run's tables are checked against (issue 30's, HOG throughout), whatever
# video.SETTINGS holds now: the tables' layout, not the current choice, is under test here.
TINY_SETTINGS = {
    "photo": dict(detector="hog", upsample=1, scale_factor=1.1, min_face=None, detect_size=1600, every=1, align=True),
    "video": dict(detector="hog", upsample=1, scale_factor=1.1, min_face=None, detect_size=1600, every=3, align=True),
    "webcam": dict(detector="hog", upsample=0, scale_factor=1.1, min_face=None, detect_size=1600, every=2,
                   align=True)}


@pytest.fixture
def tiny_run(tmp_path, monkeypatch):
    """main() on FakeData with two settings (one of them emo-predict's photo and video default), untimed into a
    JSON file, then 'timed' (fixed seconds, no busy-loop process) and written to a report in tmp_path; the
    checkout's commit changes after the run starts."""
    commits = iter(["aaaa111+uncommitted", "bbbb222", "cccc333"])
    monkeypatch.setattr(pipeline_frames, "git_commit", lambda: next(commits))
    monkeypatch.setattr(pipeline_frames, "load_dataset", FakeData)
    monkeypatch.setattr(pipeline_frames, "load_classifier", lambda *a, **k: FakeClassifier())
    monkeypatch.setattr(pipeline_frames.face_ops, "make_aligner", lambda *a: None)
    monkeypatch.setattr(pipeline_frames, "set_threads", lambda *a: None)
    monkeypatch.setattr(pipeline_frames, "MODELS", {"flagship (vgg_gap)": "reports/vgg_gap/model.pt",
                                                    "Mini-Xception": "reports/mini_xception/model.pt"})
    seconds = {"flagship (vgg_gap)": 0.010, "Mini-Xception": 0.011}  # classification; detection 0.040

    def timing_pass(args, name, keywords, *rest):
        return {**{(load, "detect"): 0.040 for load in ("idle", "busy")},
                **{(load, model, align): s * (2 if load == "busy" else 1) for model, s in seconds.items()
                   for align in (False, True) for load in ("idle", "busy")}}
    monkeypatch.setattr(pipeline_frames, "timing_pass", timing_pass)
    report = tmp_path / "benchmarks.md"
    monkeypatch.setattr(pipeline_frames, "REPORT", report)
    monkeypatch.setattr(pipeline_frames, "CHOICE", tmp_path / "pipeline_choice.json")
    monkeypatch.setattr(pipeline_frames, "SETTINGS", TINY_SETTINGS)
    accuracy_file = tmp_path / "acc_part.json"
    common = ["--faces", "6", "--empty", "2", "--seed", "3"]
    pipeline_frames.main([*common, "--no-timing", "--only", "haar 1.1, >= 48 px, whole|hog, upsample 1",
                          "--accuracy-to", str(accuracy_file)])
    pipeline_frames.main([*common, "--accuracy-from", str(accuracy_file), "--write"])
    return report.read_text(), json.loads(accuracy_file.read_text())


def test_the_written_section_reads_at_a_glance(tiny_run):
    text, _ = tiny_run
    assert markdown_problems(text) == []  # every table within the width budget, no machine path, no NaN
    assert "/tmp" not in text and "`python benchmarks/pipeline_frames.py --faces 6" in text
    assert "--accuracy-from acc_part.json --write`" in text
    assert "split `test_private_clean`" in text


def test_accuracy_has_a_row_per_setting_model_and_crop_and_speed_one_per_setting_k_and_crop(tiny_run):
    text, saved = tiny_run
    accuracy, by_size_and_tilt, speed = markdown_tables(text)  # no framing table: the aligner is faked away
    assert by_size_and_tilt[0] == ["detector setting", "recall", "40-60 px", "60-100 px", "100-200 px",
                                   "tilt 0-5°", "tilt 5-10°", "tilt 10-15°"]
    hog_row = by_size_and_tilt[-1]
    assert hog_row[0] == "hog, upsample 1 (photo, video)" and hog_row[1] == f"{saved['hog, upsample 1']['recall']:.3f}"
    assert hog_row[2:] == [pipeline_frames.fmt(v) for part in ("recall_size", "recall_tilt")
                           for v in saved["hog, upsample 1"][part].values()]
    assert accuracy[0] == ["detector setting", "model", "align", "pipeline acc.", "crop acc.", "recall",
                           "false det./frame", "false det./empty frame"]
    assert speed[0] == ["detector setting", "align", "frames/s idle", "frames/s, one core busy"]
    settings = [row[0] for row in accuracy[1:]]
    assert settings == (["haar 1.1, >= 48 px, whole frame"] * 4
                        + ["hog, upsample 1", "hog, upsample 1 (photo, video)"] * 2)
    assert [row[1:3] for row in accuracy[1:]] == [[model, align] for model in ("flagship (vgg_gap)", "Mini-Xception")
                                                  for align in ("off", "on")] * 2
    hog = saved["hog, upsample 1"]
    assert accuracy[-1][3:] == [f"{hog['pipeline']['Mini-Xception|True']:.3f}", f"{hog['crop']['Mini-Xception']:.3f}",
                                f"{hog['recall']:.3f}", f"{hog['false_face']:.3f}", f"{hog['false_empty']:.3f}"]
    for column in range(3, 8):  # one precision per column
        assert len({len(row[column].split(".")[1]) for row in accuracy[1:]}) == 1
    # speed: the flagship's, detection / K + classification; hog is timed at K = 1, 2 and 3
    assert speed[1:] == [["haar 1.1, >= 48 px, whole frame", "off", "20.0", "16.7"],
                         ["haar 1.1, >= 48 px, whole frame", "on", "20.0", "16.7"],
                         ["hog, upsample 1", "off", "20.0", "16.7"],
                         ["hog, upsample 1 (photo)", "on", "20.0", "16.7"],
                         ["hog, upsample 1, every 2", "off", "33.3", "25.0"],
                         ["hog, upsample 1, every 2", "on", "33.3", "25.0"],
                         ["hog, upsample 1, every 3", "off", "42.9", "30.0"],
                         ["hog, upsample 1, every 3 (video)", "on", "42.9", "30.0"]]
    assert "Mini-Xception's frames/s differ from these by -" in text


def test_defaults_are_in_bold_and_the_commit_is_the_one_the_run_started_with(tiny_run):
    text, saved = tiny_run
    bold = [line for line in text.splitlines() if line.startswith("| **")]
    assert len(bold) == 5 and all(line.count("**") == 2 * (line.count(" | ") + 1) for line in bold)
    assert {line.split(" | ")[0] for line in bold} == {
        "| **hog, upsample 1 (photo, video)**", "| **hog, upsample 1 (photo)**",
        "| **hog, upsample 1, every 3 (video)**"}
    assert "chosen from these tables: photo: hog upsample 1, align on, every 1" in text
    assert saved["_made_at"] == "aaaa111+uncommitted"  # the accuracy run's commit, read as it started
    assert "commit `bbbb222`; data sha256" in text  # the timing run's, read as it started
    assert "at commit `aaaa111` with uncommitted changes" in text and "cccc333" not in text


def test_accuracy_parts_made_at_different_commits_name_each():
    assert pipeline_frames.commit_text("aaaa111") == "`aaaa111`"
    assert (pipeline_frames.commit_text("aaaa111 and bbbb222+uncommitted")
            == "`aaaa111` and `bbbb222` with uncommitted changes")


def test_the_choice_names_the_best_model_under_the_photo_default_and_help_states_it(tiny_run, tmp_path, monkeypatch,
                                                                                   capsys):
    from emo_utils.predict import choice, cli
    chosen = json.loads((tmp_path / "pipeline_choice.json").read_text())
    photo_name, _ = pipeline_frames.setting_candidate("photo")
    assert set(chosen["models"]) == {"vgg_gap", "mini_xception"} and chosen["faces"] == 6
    pipelines = {name: m["pipeline"] for name, m in chosen["models"].items()}
    assert chosen["model"] == max(pipelines, key=pipelines.get)
    assert chosen["settings"]["photo"]["candidate"] == photo_name
    monkeypatch.setattr(choice, "CHOICE_FILE", tmp_path / "pipeline_choice.json")
    photo_args = cli.build_parser().parse_args(["face.png"])
    cli.resolve_settings(photo_args)  # --model left out: the benchmark's choice for a photo
    assert photo_args.model == chosen["model"]
    best = chosen["models"][chosen["model"]]
    assert f"default: {chosen['model']}, the most faces labelled right" in choice.model_help(chosen)
    assert f"{best['pipeline']:.1%}" in choice.model_help(chosen)
    help_text = " ".join(cli.build_parser().format_help().split())  # argparse wraps it
    assert f"(default: {chosen['model']}, the most faces labelled right" in help_text
    assert f"{best['pipeline']:.1%}" in help_text
    monkeypatch.setattr(choice, "CHOICE_FILE", tmp_path / "absent.json")
    photo_args = cli.build_parser().parse_args(["face.png"])
    cli.resolve_settings(photo_args)
    assert photo_args.model == choice.FALLBACK_MODEL


def test_a_model_added_after_a_saved_pass_has_rows_only_where_it_was_measured(tiny_run, tmp_path, monkeypatch):
    """The robust fine-tunes (issue 38) join the photo default's pass; the passes saved before them stay as they
    were: no row for a model a pass never ran, and the text says where each was measured."""
    _, saved = tiny_run  # haar and hog, with the flagship and Mini-Xception
    models = {**pipeline_frames.MODELS, "robust flagship": "reports/vgg_gap_robust/model.pt"}
    monkeypatch.setattr(pipeline_frames, "MODELS", models)
    monkeypatch.setattr(pipeline_frames, "git_commit", lambda: "dddd444")
    common = ["--faces", "6", "--empty", "2", "--seed", "3", "--no-timing"]
    pipeline_frames.main([*common, "--only", "hog, upsample 1", "--accuracy-to", str(tmp_path / "acc_hog3.json")])
    old = {k: v for k, v in saved.items() if k != "hog, upsample 1"}
    (tmp_path / "acc_old.json").write_text(json.dumps(old))
    pipeline_frames.main([*common, "--accuracy-from", f"{tmp_path / 'acc_old.json'}|{tmp_path / 'acc_hog3.json'}",
                          "--write"])
    accuracy = markdown_tables((tmp_path / "benchmarks.md").read_text())[0]
    robust = [row[0] for row in accuracy[1:] if row[1] == "robust flagship"]
    assert robust == ["hog, upsample 1", "hog, upsample 1 (photo, video)"]  # its pass only, both crops
    assert len([row for row in accuracy[1:] if row[1] == "Mini-Xception"]) == 4  # haar and hog, as before
    assert "robust flagship was measured under hog, upsample 1 only." in (tmp_path / "benchmarks.md").read_text()
    chosen = json.loads((tmp_path / "pipeline_choice.json").read_text())
    assert set(chosen["models"]) == {"vgg_gap", "mini_xception", "vgg_gap_robust"}  # the photo default's pass
