"""Bad inputs, one table: data, checkpoints, notebook parameters, models, predict inputs. Each row builds one
bad input in a temporary folder beside files an earlier good run wrote; the call must fail (or, for predict,
skip the file and go on) with a message that names the file or parameter and says what to do, and every file
that existed before must be byte for byte the same afterwards."""
from __future__ import annotations

import contextlib
import csv
import io
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from conftest import make_fer_csv, make_fer_files, make_fer_zip, make_image_bytes
from emo_utils.core import data as data_module
from emo_utils.predict import cli as predict
from emo_utils.core.readers import DataError
from emo_utils.core.data import load_dataset
from emo_utils.reports.notebooks import check_parameter_type, run_reports
from emo_utils.recipes import NotebookError
from emo_utils.core.checkpoint import CheckpointError, load_checkpoint, load_trained
from emo_utils.core.config import TrainConfig
from emo_utils.core.train import train
from synthetic import FAST, make_learnable_data
from test_reports import write_notebook

OTHER_ARCHITECTURE = {"widths": (16, 32)}


@dataclass
class Bad:
    """What a row's maker hands back: the call that meets the bad input, and what its message must contain."""
    call: Callable[[], str]  # returns the error message (or, for predict, what it printed)
    mentions: list[str]  # literal text the message must contain: the file, row or parameter
    after: Callable[[], None] = lambda: None  # extra checks once the call is done


@dataclass
class Case:
    id: str
    make: Callable[[Path, Path], Bad]  # (tmp_path, a finished run folder to copy) -> Bad
    fix: str  # regex: the message says what to do


def fails_with(error: type[Exception], call: Callable, *args, **kwargs) -> str:
    with pytest.raises(error) as info:
        call(*args, **kwargs)
    return str(info.value)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """last.pt, best.pt and final.pt of a one-epoch run: the 'earlier good run' each checkpoint row starts from."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train(TrainConfig(**FAST, epochs=1), make_learnable_data(), run_dir, device="cpu", progress=False)
    return run_dir


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No row sees the real data or writes the real cache."""
    monkeypatch.setattr(data_module, "REPO_ROOT", tmp_path / "world" / "repo")
    monkeypatch.delenv("EMO_DATA", raising=False)
    monkeypatch.setenv("EMO_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------- data

def with_good_dataset_cached(tmp_path: Path) -> None:
    """An earlier good load leaves its decoded cache; a bad load must not touch it."""
    load_dataset(make_fer_zip(tmp_path / "good", n_train=2))
    assert list((tmp_path / "cache").rglob("*")), "the good load should have cached"


def truncated_zip(tmp_path, _):
    with_good_dataset_cached(tmp_path)
    src = make_fer_zip(tmp_path / "bad", n_train=2)
    src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return Bad(lambda: fails_with(DataError, load_dataset, src), [str(src), "not a readable zip"])


def truncated_jpeg(tmp_path, _):
    with_good_dataset_cached(tmp_path)
    files = make_fer_files(n_train=2)
    victim = next(p for p in files if p.startswith("test/happy/PrivateTest_"))
    files[victim] = files[victim][: len(files[victim]) // 2]
    src = make_fer_zip(tmp_path / "bad", files)
    return Bad(lambda: fails_with(DataError, load_dataset, src), [str(src), victim, "cannot decode image"])


def class_only_in_train(tmp_path, _):
    with_good_dataset_cached(tmp_path)
    files = make_fer_files(classes=("a", "b"), n_train=2)
    files["train/contempt/Training_9.jpg"] = make_image_bytes()
    src = make_fer_zip(tmp_path / "bad", files)
    return Bad(lambda: fails_with(DataError, load_dataset, src), [str(src), "only in train: ['contempt']"])


def csv_short_row(tmp_path, _):
    with_good_dataset_cached(tmp_path)
    src = make_fer_csv(tmp_path / "bad", rows=[(0, " ".join(["7"] * 2303), "Training")])
    return Bad(lambda: fails_with(DataError, load_dataset, src), [f"{src}, line 2", "got 2303"])


def missing_dataset(tmp_path, _):
    with_good_dataset_cached(tmp_path)
    src = tmp_path / "downloads" / "fer2013.zip"
    return Bad(lambda: fails_with(DataError, load_dataset, src), [str(src), "holds no dataset: it does not exist"])


# ---------------------------------------------------------------- checkpoints and models

def copy_run(finished_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


def truncated_last(tmp_path, finished_run):
    run = copy_run(finished_run, tmp_path)
    (run / "final.pt").unlink()  # killed before the end: only last.pt and best.pt
    raw = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(raw[: len(raw) // 2])
    config = TrainConfig(**FAST, epochs=2)
    return Bad(lambda: fails_with(CheckpointError, train, config, make_learnable_data(), run, device="cpu",
                                  progress=False), [f"{run / 'last.pt'}: unreadable checkpoint"])


def empty_final(tmp_path, finished_run):
    run = copy_run(finished_run, tmp_path)
    (run / "final.pt").write_bytes(b"")  # a disk that filled up under a writer that did not write atomically
    config = TrainConfig(**FAST, epochs=1)
    return Bad(lambda: fails_with(CheckpointError, train, config, make_learnable_data(), run, device="cpu",
                                  progress=False), [f"{run / 'final.pt'}: unreadable checkpoint"])


def run_of_another_model(tmp_path, finished_run):
    run = copy_run(finished_run, tmp_path)
    config = TrainConfig(**{**FAST, "model_kwargs": OTHER_ARCHITECTURE}, epochs=1)
    return Bad(lambda: fails_with(CheckpointError, train, config, make_learnable_data(), run, device="cpu",
                                  progress=False),
               [f"{run / 'last.pt'} was made with another config", "model_kwargs: checkpoint {'widths': "])


def weights_of_another_architecture(tmp_path, finished_run):
    """A final.pt whose config names one architecture and whose weights are another's (the model's code
    changed since it was written): a CheckpointError, not load_state_dict's raw RuntimeError."""
    copy_run(finished_run, tmp_path)
    checkpoint = load_checkpoint(finished_run / "final.pt")
    checkpoint["config"]["model_kwargs"] = OTHER_ARCHITECTURE
    path = tmp_path / "reports" / "mini_xception" / "model.pt"
    path.parent.mkdir(parents=True)
    torch.save(checkpoint, path)
    return Bad(lambda: fails_with(CheckpointError, load_trained, path, device="cpu"),
               [str(path), "do not fit the model it names, mini_xception {'widths': ", "size mismatch"])


class CodeCarrier:
    """Unpickled without weights_only, this would create `marker`: a stand-in for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def pickle_carrying_code(tmp_path, finished_run):
    copy_run(finished_run, tmp_path)
    checkpoint = load_checkpoint(finished_run / "final.pt")
    marker = tmp_path / "code_ran"
    checkpoint["model"] = {"conv.weight": CodeCarrier(marker)}
    path = tmp_path / "downloaded" / "model.pt"
    path.parent.mkdir()
    torch.save(checkpoint, path)

    def never_ran():
        assert not marker.exists(), "the pickle's code ran"

    return Bad(lambda: fails_with(CheckpointError, load_trained, path, device="cpu"),
               [f"{path}: unreadable checkpoint", "UnpicklingError"], never_ran)


def unknown_model(tmp_path, finished_run):
    run = copy_run(finished_run, tmp_path)
    config = TrainConfig(**{**FAST, "model": "nope", "model_kwargs": {}}, epochs=1)
    return Bad(lambda: fails_with(ValueError, train, config, make_learnable_data(), run, device="cpu",
                                  progress=False), ["unknown model 'nope'", "mini_xception"])


# ---------------------------------------------------------------- notebook parameters

def tiny_report(tmp_path, parameters):
    """A notebook whose run would leave a marker, and the report an earlier good run of it wrote."""
    nb_dir, reports = tmp_path / "nb", tmp_path / "reports"
    nb_dir.mkdir()
    write_notebook(nb_dir / "01_tiny.ipynb", "seed = 0\nlr = 0.1\nrecipe = dict(epochs=2)\nlabel = None",
                   "open('ran', 'w').write('the notebook ran')")
    reports.mkdir()
    for name in ("01_tiny.ipynb", "01_tiny.html", "README.md"):
        (reports / name).write_text(f"earlier good {name}\n")

    def never_ran():
        assert not (nb_dir / "ran").exists(), "the notebook ran despite a bad parameter"

    return lambda: fails_with(NotebookError, run_reports, parameters=parameters, kernel="python3",
                              notebooks_dir=nb_dir, reports_dir=reports, progress=False), never_ran


def unknown_parameter(tmp_path, _):
    call, never_ran = tiny_report(tmp_path, {"sed": 1})
    return Bad(call, ["parameter 'sed' is not declared by 01_tiny.ipynb", "'seed'"], never_ran)


def string_for_int(tmp_path, _):
    call, never_ran = tiny_report(tmp_path, {"seed": "abc"})
    return Bad(call, ["01_tiny.ipynb", "parameter 'seed' is declared `seed = 0`, an int", "got 'abc', a str"],
               never_ran)


def bool_for_int(tmp_path, _):
    call, never_ran = tiny_report(tmp_path, {"seed": True})
    return Bad(call, ["01_tiny.ipynb", "'seed'", "got True, a bool"], never_ran)


def string_for_dict_call(tmp_path, _):
    call, never_ran = tiny_report(tmp_path, {"recipe": "fast"})
    return Bad(call, ["01_tiny.ipynb", "parameter 'recipe' is declared `recipe = dict(epochs=2)`, a dict"],
               never_ran)


# ---------------------------------------------------------------- predict inputs

def run_predict(argv: list[str]) -> tuple[int, str]:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        rc = predict.main(argv)
    return rc, stderr.getvalue()


def predict_inputs(tmp_path, finished_run, inputs: Callable[[Path], list[Path]], expected_rc: int,
                   model: Path | None = None):
    copy_run(finished_run, tmp_path)
    good = tmp_path / "faces" / "good_face.png"
    good.parent.mkdir()
    good.write_bytes(make_image_bytes(1, fmt="PNG"))
    out = tmp_path / "out.csv"
    paths = inputs(tmp_path)
    argv = [*map(str, paths), "--model", str(model or tmp_path / "run" / "final.pt"), "--csv", str(out)]

    def call():
        rc, printed = run_predict(argv)
        assert rc == expected_rc, printed
        return printed

    def good_face_classified():
        rows = list(csv.DictReader(out.open()))
        assert [Path(r["file"]).name for r in rows] == ["good_face.png"]

    return call, good_face_classified


def non_image_file(tmp_path, finished_run):
    def inputs(tmp):
        (tmp / "faces" / "notes.txt").write_text("not a picture")
        return [tmp / "faces"]
    call, after = predict_inputs(tmp_path, finished_run, inputs, expected_rc=0)
    return Bad(call, [f"skipped {tmp_path / 'faces' / 'notes.txt'}: not an image", "1 face(s) classified"], after)


def empty_folder(tmp_path, finished_run):
    def inputs(tmp):
        (tmp / "empty").mkdir()
        return [tmp / "empty", tmp / "faces" / "good_face.png"]
    call, after = predict_inputs(tmp_path, finished_run, inputs, expected_rc=0)
    return Bad(call, [f"skipped {tmp_path / 'empty'}", "empty folder", "1 face(s) classified"], after)


def truncated_model(tmp_path, finished_run):
    model = tmp_path / "half_model.pt"

    def inputs(tmp):
        raw = (tmp / "run" / "final.pt").read_bytes()
        model.write_bytes(raw[: len(raw) // 2])
        return [tmp / "faces"]
    call, _ = predict_inputs(tmp_path, finished_run, inputs, expected_rc=2, model=model)
    return Bad(call, [f"{model}: unreadable checkpoint"])


def text_file_as_model(tmp_path, finished_run):
    model = tmp_path / "notes.pt"

    def inputs(tmp):
        model.write_text("not a checkpoint, a text file named like one")
        return [tmp / "faces"]
    call, _ = predict_inputs(tmp_path, finished_run, inputs, expected_rc=2, model=model)
    return Bad(call, [f"{model}: unreadable checkpoint: not a PyTorch checkpoint"])


# ---------------------------------------------------------------- the table

DELETE_OR_RETRAIN = r"delete it to start again, or retrain \(retrain=True"
CASES = [
    Case("data-truncated-zip", truncated_zip, "download it again"),
    Case("data-truncated-jpeg-in-zip", truncated_jpeg, "re-download the dataset or delete this file"),
    Case("data-class-only-in-train", class_only_in_train, "Add the missing class folder or remove the extra one"),
    Case("data-csv-row-short-of-pixels", csv_short_row, "fix or delete it"),
    Case("data-named-path-missing", missing_dataset, r"Get FER2013 from Kaggle .* EMO_DATA"),
    Case("checkpoint-truncated-last", truncated_last, DELETE_OR_RETRAIN),
    Case("checkpoint-empty-final", empty_final, DELETE_OR_RETRAIN),
    Case("checkpoint-run-of-another-model", run_of_another_model,
         r"Retrain \(retrain=True.* or use another run folder"),
    Case("checkpoint-weights-of-another-architecture", weights_of_another_architecture,
         r"retrain \(retrain=True, `make reports RETRAIN=1`\)"),
    Case("checkpoint-pickle-carrying-code", pickle_carrying_code, DELETE_OR_RETRAIN),
    Case("model-unknown", unknown_model, r"registered models: \[.*'mini_xception'"),
    Case("notebook-unknown-parameter", unknown_parameter, "Use one of those names, or add it to the notebook's"),
    Case("notebook-str-for-int", string_for_int, "Pass an int"),
    Case("notebook-bool-for-int", bool_for_int, "Pass an int"),
    Case("notebook-str-for-dict", string_for_dict_call, "Pass a dict"),
    Case("predict-non-image-file", non_image_file, r"skipped 1:\n  .*notes.txt: not an image"),
    Case("predict-empty-folder", empty_folder, "empty folder: no files in it"),
    Case("predict-truncated-model", truncated_model, DELETE_OR_RETRAIN),
    Case("predict-text-file-as-model", text_file_as_model, DELETE_OR_RETRAIN),
]


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_named_with_its_fix_and_nothing_written_is_lost(case, tmp_path, finished_run):
    bad = case.make(tmp_path, finished_run)
    before = snapshot(tmp_path)
    message = bad.call()
    for text in bad.mentions:
        assert text in message, f"{text!r} missing from: {message}"
    assert re.search(case.fix, message), f"no fix ({case.fix!r}) in: {message}"
    assert "Traceback" not in message
    after = snapshot(tmp_path)
    changed = [str(p.relative_to(tmp_path)) for p, content in before.items() if after.get(p) != content]
    assert not changed, f"files written before were changed or removed: {changed}"
    bad.after()


# ---------------------------------------------------------------- what is not an error

def test_parameter_types_that_fit():
    nb = Path("01_tiny.ipynb")
    for value, default in [(3, "0.1"), (0.5, "0.1"), ("/data", "None"), (7, "None"), ([1, 2], "(1, 2)"),
                           ((1, 2), "[0]"), ({"lr": 1}, "dict(lr=0.1)"), ("x", "Path('a') / 'b'"), (False, "True")]:
        check_parameter_type(nb, "p", value, default)
    for value, default in [(1.5, "0"), ("1", "0"), (1, "True"), (None, "0"), ([1], "dict()")]:
        with pytest.raises(NotebookError, match="01_tiny.ipynb: parameter 'p' is declared"):
            check_parameter_type(nb, "p", value, default)


def test_finished_model_of_another_architecture_is_retrained_not_reused(tmp_path, finished_run):
    run = copy_run(finished_run, tmp_path)
    for name in ("last.pt", "best.pt"):  # only the other model's final.pt is left, e.g. copied by hand
        (run / name).unlink()
    config = TrainConfig(**{**FAST, "model_kwargs": OTHER_ARCHITECTURE}, epochs=1)
    result = train(config, make_learnable_data(), run, device="cpu", progress=False)
    assert not result.meta["reused"]
    assert load_checkpoint(run / "final.pt")["config"]["model_kwargs"] == OTHER_ARCHITECTURE
