"""Ensembles: fitted weights find the informative members and never read a test split."""
import numpy as np
import pytest

from emo_utils.core.tta import TTA_VIEWS
from emo_utils.reports.ensemble import (accuracy, best_view_probs, combine, ensemble_probs, fit_on_validation, fit_weights,
                                greedy_selection, log_loss)
from emo_utils.core.inference import predict_splits
from emo_utils.core.checkpoint import load_trained
from synthetic import make_learnable_data
from tiny_model import tiny_model


def noisy_probs(labels, num_classes, knows, rng, strength=3.0):
    """Softmax outputs that point at the true class for the classes in `knows` and are noise elsewhere."""
    logits = rng.normal(0, 1, (len(labels), num_classes))
    informed = np.isin(labels, knows)
    logits[np.flatnonzero(informed), labels[informed]] += strength
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.fixture
def members():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 4000)
    probs = {"knows_low": noisy_probs(labels, 6, [0, 1, 2], rng),
             "knows_high": noisy_probs(labels, 6, [3, 4, 5], rng),
             "noise": noisy_probs(labels, 6, [], rng)}
    return probs, labels


def test_fitted_weights_recover_the_symmetric_best_weighting(members):
    probs, labels = members
    weights = fit_weights(list(probs.values()), labels)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[2] < 0.05  # the noise member is switched off
    assert weights[0] == pytest.approx(0.5, abs=0.05) and weights[1] == pytest.approx(0.5, abs=0.05)
    fitted = ensemble_probs(list(probs.values()), weights)
    equal = ensemble_probs(list(probs.values()), [1, 1, 1])
    assert log_loss(fitted, labels) < log_loss(equal, labels)
    assert accuracy(fitted, labels) > max(accuracy(p, labels) for p in probs.values())


def test_fitted_weights_match_a_brute_force_search_on_the_simplex(members):
    probs, labels = members
    two = [probs["knows_low"], probs["noise"]]
    grid = np.linspace(0, 1, 201)
    best = grid[np.argmin([log_loss(ensemble_probs(two, [w, 1 - w]), labels) for w in grid])]
    assert fit_weights(two, labels)[0] == pytest.approx(best, abs=0.01)


def test_members_that_barely_move_the_mix_are_dropped_and_the_rest_refitted(members):
    probs, labels = members
    rng = np.random.default_rng(1)
    wrong = noisy_probs((labels + 1) % 6, 6, list(range(6)), rng, strength=6.0)  # confidently wrong on every face
    candidates = {**probs, "wrong": wrong}
    assert 0 < fit_weights(list(candidates.values()), labels)[-1] < 1e-3  # L-BFGS never reaches an exact zero
    weights = fit_on_validation({n: {"val": p} for n, p in candidates.items()}, labels, "logloss")
    assert weights["wrong"] == 0.0
    assert sum(weights.values()) == pytest.approx(1.0)
    assert all(w == 0.0 or w >= 1e-3 for w in weights.values())
    kept = [n for n, w in weights.items() if w > 0]
    refit = dict(zip(kept, fit_weights([candidates[n] for n in kept], labels)))
    assert all(weights[n] == pytest.approx(refit[n]) for n in kept)


def test_greedy_selection_picks_the_complementary_members(members):
    probs, labels = members
    weights = greedy_selection(probs, labels)
    assert set(weights) == {"knows_low", "knows_high"}
    assert sum(weights.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["equal", "logloss", "greedy"])
def test_weights_never_see_a_test_split(members, method):
    probs, labels = members
    by_split = {name: {"val": p, "test_private": np.full_like(p, np.nan), "test_all": np.full_like(p, np.nan)}
                for name, p in probs.items()}
    weights = fit_on_validation(by_split, labels, method)  # NaN test probabilities would poison any read of them
    assert all(np.isfinite(w) for w in weights.values())
    assert list(weights) == list(probs)  # every candidate has a weight, so reports count members "of" the same whole
    clean = {name: {"val": p} for name, p in probs.items()}
    assert weights == fit_on_validation(clean, labels, method)
    combined = combine(by_split, weights)
    assert set(combined) == {"val", "test_private", "test_all"}


def test_unknown_method_is_named(members):
    probs, labels = members
    with pytest.raises(KeyError, match="stacking"):
        fit_on_validation({n: {"val": p} for n, p in probs.items()}, labels, "stacking")


def test_each_member_is_scored_under_its_best_views_on_val(tmp_path_factory):
    data = make_learnable_data(train_per_class=30)
    crop_net = tiny_model(tmp_path_factory)  # trained on 44-pixel crops: all four view sets apply
    labels = {s: data.split(s)[1] for s in ("val", "test_private", "test_public", "test_all")}
    probs, chosen = best_view_probs({"crop_net": crop_net}, data)

    trained = load_trained(crop_net)
    every_view = {v: predict_splits(trained.model, data, crop=44, tta=v) for v in TTA_VIEWS}
    val_acc = {v: accuracy(p["val"], labels["val"]) for v, p in every_view.items()}
    best = max(val_acc.values())
    fewest_best = next(v for v in TTA_VIEWS if val_acc[v] == best)  # a tie goes to the fewer views
    assert chosen["crop_net"] == fewest_best
    np.testing.assert_allclose(probs["crop_net"]["test_private"], every_view[fewest_best]["test_private"], atol=1e-6)
