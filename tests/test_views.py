"""Scored views: each model's test-time views are predicted once, kept beside its weights, and reused only while
the weights, the data and the splits are the ones they were scored on."""
import shutil

import numpy as np
import pytest

from emo_utils import paths
from emo_utils.reports import views
from emo_utils.core.tta import TTA_VIEWS
from emo_utils.core.inference import predict_splits
from emo_utils.core.checkpoint import load_trained
from synthetic import make_learnable_data
from tiny_model import tiny_model


@pytest.fixture
def model_file(tmp_path_factory, tmp_path):
    path = tmp_path / "model.pt"  # a copy of its own: the views file is written beside it
    shutil.copy(tiny_model(tmp_path_factory), path)
    return path


def test_views_are_the_predictions_of_each_view_and_are_written_beside_the_weights(model_file):
    data = make_learnable_data(train_per_class=30)
    scored = views.scored_views(model_file, data)
    assert list(scored) == list(TTA_VIEWS)  # trained on 44-px crops: every view set differs
    assert paths.views_cache(model_file).exists()
    model = load_trained(model_file).model
    for view in ("center", "ten_crop"):
        direct = predict_splits(model, data, crop=44, tta=view)
        assert set(scored[view]) == set(direct) | set(data.clean_splits())
        for split, probs in direct.items():
            np.testing.assert_allclose(scored[view][split], probs, atol=1e-6)
        for clean in data.clean_splits():  # cut from the stored test folder, never predicted on their own
            np.testing.assert_allclose(scored[view][clean], predict_splits(model, data, [clean], crop=44, tta=view)[clean],
                                       atol=1e-6)


@pytest.mark.slow
def test_views_are_read_back_without_the_model_and_rescored_when_weights_or_data_change(model_file, monkeypatch):
    data = make_learnable_data(train_per_class=30)
    first = views.scored_views(model_file, data)
    real_loader = views.load_for_scoring

    def refuse(*args, **kwargs):
        raise AssertionError("scored again although the views file matches")

    monkeypatch.setattr(views, "load_for_scoring", refuse)
    again = views.scored_views(model_file, data)
    for view in first:
        for split in first[view]:
            np.testing.assert_array_equal(again[view][split], first[view][split])

    calls = []
    monkeypatch.setattr(views, "load_for_scoring", lambda *a, **k: calls.append(a) or real_loader(*a, **k))
    other_data = make_learnable_data(train_per_class=30, seed=3)  # other images, other sha256
    views.scored_views(model_file, other_data)
    other_split = make_learnable_data(train_per_class=30)
    other_split.val_seed = 1  # the same data with another validation split
    views.scored_views(model_file, other_split)
    model_file.write_bytes(model_file.read_bytes())  # same bytes: still a match
    views.scored_views(model_file, other_split)
    assert len(calls) == 2


def test_a_corrupt_views_file_is_scored_again(model_file):
    data = make_learnable_data(train_per_class=30)
    paths.views_cache(model_file).write_bytes(b"not a zip")
    scored = views.scored_views(model_file, data)
    assert scored["flip"]["val"].shape == (len(data.split("val")[1]), 7)


def test_chosen_views_have_the_best_val_accuracy_and_an_asked_view_is_kept(model_file):
    data = make_learnable_data(train_per_class=30)
    chosen, probs, rows = views.chosen_views(model_file, data)
    val = {row["test-time views"]: row["val"] for row in rows}
    assert val[chosen] == max(val.values())
    assert probs is views.scored_views(model_file, data)[chosen] or np.array_equal(
        probs["test_private"], views.scored_views(model_file, data)[chosen]["test_private"])
    assert views.chosen_views(model_file, data, tta=True)[0] == "flip"
    assert views.chosen_views(model_file, data, tta=False)[0] == "center"


def test_a_view_set_new_in_the_table_is_scored_alone_and_added_to_the_file(model_file, monkeypatch):
    from emo_utils.core import tta
    data = make_learnable_data(train_per_class=30)
    first = views.scored_views(model_file, data)
    # A twelfth view set added to the one table: a committed model's file lacks it and must gain it.
    centre_twice = tta.ViewSet("centre_twice", "centre crop, twice", lambda x, crop: [tta.center_crop(x, crop)] * 2,
                               True)
    monkeypatch.setitem(tta.VIEW_SETS, "centre_twice", centre_twice)
    monkeypatch.setattr(tta, "TTA_VIEWS", tuple(tta.VIEW_SETS))
    monkeypatch.setattr(views, "TTA_VIEWS", tuple(tta.VIEW_SETS))
    scored_now = []
    real_predict = views.predict_splits
    monkeypatch.setattr(views, "predict_splits", lambda *a, **k: scored_now.append(k["tta"]) or real_predict(*a, **k))
    again = views.scored_views(model_file, data)
    assert scored_now == ["centre_twice"]  # the others are read back, not predicted again
    assert list(again) == list(TTA_VIEWS) + ["centre_twice"]
    np.testing.assert_allclose(again["centre_twice"]["val"], first["center"]["val"], atol=1e-6)
    with np.load(paths.views_cache(model_file)) as saved:
        assert "centre_twice/val" in saved.files and "ten_crop/val" in saved.files
    scored_now.clear()
    views.scored_views(model_file, data)
    assert scored_now == []  # now in the file
