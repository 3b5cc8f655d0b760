"""Nothing a user has breaks: every committed model file loads and gives the numbers its report shows.

Needs the real FER2013 (`load_dataset()`'s search: $EMO_DATA, data/, ../shared/data/) and is skipped, with the
reason, without it. Each leaderboard model's headline number (PrivateTest, 3,589 faces, under the test-time views its
metrics.json names) is checked in two halves: the probabilities kept beside its weights (model_views.npz, keyed by
the weights' and the data's sha256) give the number in metrics.json, and its weights give those probabilities
again on a seeded sample of SAMPLE faces of that split. Each ablation's row of the parent report's ablation table (its flip-TTA column) is
checked in two halves that together cost a seventh of predicting it again: the flip probabilities kept beside its
weights (model_views.npz, keyed by the weights' and the data's sha256) give the number in the table, and its
weights give those probabilities again on a seeded sample of SAMPLE PrivateTest faces.

Up to one face may differ: another CPU may round a near-tie the other way. A changed model file, model code,
preprocessing, crop or views moves far more faces than that."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import numpy as np

from emo_utils.core.inference import predict_logits, softmax
from emo_utils.paths import views_cache
from emo_utils.reports.ablation import weight_candidates
from emo_utils.paths import slug
from emo_utils.reports.views import cache_key, headline_split, load_for_scoring
from emo_utils.reports.tables import COLUMN_LABELS

FLIP = COLUMN_LABELS["test_private, flip TTA"]  # the column every training-runs table shows PrivateTest under flip views in

REPORTS = Path(__file__).resolve().parents[1] / "reports"
SAMPLE = 256  # faces of the split the weights classify again: a changed model, crop or view moves far more than 1
MODELS = sorted(p.parent.name for p in REPORTS.glob("*/model.pt"))
ABLATIONS = sorted(f"{p.parents[2].name}/{p.parent.name}" for p in REPORTS.glob("*/ablations/*/model.pt"))

pytestmark = [pytest.mark.real_data, pytest.mark.slow]  # evaluates every committed model on FER2013


@pytest.fixture(scope="module")
def fer2013():
    from emo_utils.core.readers import DataError
    from emo_utils.core.data import load_dataset
    try:
        return load_dataset()
    except DataError as e:
        pytest.skip(f"needs the real FER2013 (../shared/data/fer2013.zip or $EMO_DATA): {str(e).splitlines()[0]}")


def on_this_data(record: dict, data, where: str) -> None:
    if record["provenance"].get("data_sha256") != data.sha256:
        pytest.skip(f"{where} was reported on other data (sha256 {record['provenance'].get('data_sha256')}) than "
                    f"{data.source} ({data.sha256})")


@pytest.mark.parametrize("name", MODELS)
def test_committed_model_reproduces_the_headline_accuracy_of_its_report(name, fer2013):
    model_path, metrics_path = REPORTS / name / "model.pt", REPORTS / name / "metrics.json"
    assert metrics_path.exists(), f"{model_path} is committed without the metrics.json of its report"
    record = json.loads(metrics_path.read_text())
    on_this_data(record, fer2013, metrics_path)
    prov = record["provenance"]
    assert "tta" in prov, (f"{metrics_path} names no test-time views: a report written before views were named; "
                           "run its notebook again (make reports NB=...)")
    candidates = weight_candidates(model_path)  # {row name in the report: key in the model file}
    weights = prov.get("weights", next(iter(candidates)))
    assert weights in candidates, f"{metrics_path} names {weights!r} weights; {model_path} holds {list(candidates)}"
    split = headline_split(record["splits"])
    # Two halves, as for the ablations below: the probabilities kept beside the weights under the report's views
    # give its number, and the weights give those probabilities again on a seeded sample (the whole split under ten
    # crops took minutes per model on a CPU without AVX-512).
    stored = stored_probs(model_path, fer2013, prov["tta"], candidates[weights], split)
    labels = fer2013.split(split)[1]
    right, n = int((stored.argmax(1) == labels).sum()), len(labels)
    reported = record["splits"][split]
    assert reported["n"] == n, (name, split)
    assert abs(right - reported["accuracy"] * n) <= 1, (
        f"{views_cache(model_path, candidates[weights])} under {prov['tta']} views classifies {right} of {n} {split} "
        f"faces right ({right / n:.4f}); {metrics_path} says {reported['accuracy']:.4f}")
    same_on_a_sample(model_path, fer2013, split, prov["tta"], stored, candidates[weights])


def same_on_a_sample(model_path: Path, data, split: str, views: str, stored: np.ndarray, weights: str = "model"):
    """The weights classify a seeded sample of SAMPLE faces of the split as the stored probabilities say."""
    sample = np.sort(np.random.default_rng(0).choice(len(stored), SAMPLE, replace=False))
    model, crop = load_for_scoring(model_path, weights, device="cpu")
    now = softmax(predict_logits(model, data.split(split)[0][sample], crop=crop, tta=views))
    differ = int((now.argmax(1) != stored[sample].argmax(1)).sum())
    assert differ <= 1 and np.abs(now - stored[sample]).max() < 1e-3, (
        f"{model_path} under {views} views, on {SAMPLE} {split} faces: {differ} classified otherwise than "
        f"{views_cache(model_path, weights)} says, largest probability change {np.abs(now - stored[sample]).max():.2g}")


def ablation_table(readme: Path) -> dict[str, dict[str, str]]:
    """{slug of the run's name: {column: cell}} from every table of training runs in a report (those whose first
    column is `run` and that show the PrivateTest-under-flip column, named as tables.py names it): the 'Training runs' table, and a screen's when it has one."""
    lines = [line.strip() for line in readme.read_text().splitlines()]
    cells = lambda line: [c.strip() for c in line.strip("|").split("|")]  # noqa: E731
    starts = [i for i, line in enumerate(lines) if line.startswith("| run |") and f"| {FLIP} |" in line]
    assert starts, f"{readme} has no ablation table ('| run | ... | {FLIP} | ...')"
    rows = []
    for start in starts:
        header = cells(lines[start])
        for line in lines[start + 2:]:
            if not line.startswith("|"):
                break
            rows.append(dict(zip(header, cells(line))))
    return {slug(row["run"]): row for row in rows}


@pytest.mark.parametrize("name", ABLATIONS)
def test_committed_ablation_reproduces_its_row_of_the_ablation_table(name, fer2013):
    parent, run = name.split("/")
    model_path, readme = REPORTS / parent / "ablations" / run / "model.pt", REPORTS / parent / "README.md"
    on_this_data(json.loads((REPORTS / parent / "metrics.json").read_text()), fer2013, readme)
    rows = ablation_table(readme)
    assert run in rows, f"{model_path}: no row of {readme}'s ablation table is named for {run!r} ({list(rows)})"
    reported = float(rows[run][FLIP])  # four places: within half a unit of the fourth
    stored = stored_flip_probs(model_path, fer2013)
    labels = fer2013.split("test_private")[1]
    right, n = int((stored.argmax(1) == labels).sum()), len(labels)
    assert abs(right / n - reported) <= 1 / n + 5e-5, (
        f"{views_cache(model_path)} holds flip-TTA probabilities that classify {right} of {n} test_private faces "
        f"right ({right / n:.4f}); {readme} says {reported:.4f}")
    same_on_a_sample(model_path, fer2013, "test_private", "flip", stored)


def stored_probs(model_path: Path, data, views: str = "flip", weights: str = "model",
                 split: str = "test_private") -> np.ndarray:
    """The probabilities on a test split under `views` kept beside a model, refused unless made from these weights
    on this data."""
    path = views_cache(model_path, weights)
    assert path.exists(), f"{model_path} is committed without {path.name}: run its notebook again (make reports)"
    with np.load(path) as saved:
        assert str(saved["key"]) == cache_key(model_path, data, weights), (
            f"{path} was scored from other weights or data than {model_path}: run its notebook again")
        assert f"{views}/test_all" in saved.files, f"{path} holds no {views} probabilities: run its notebook again"
        test_all = saved[f"{views}/test_all"]
    return test_all[data.split_mask(split)[data.split_mask("test_all")]]


def stored_flip_probs(model_path: Path, data) -> np.ndarray:
    return stored_probs(model_path, data)
