"""The corruption suite (FER2013-C): each corruption is fixed for a seed, leaves torch's RNG alone, and grows
worse with its severity on a synthetic face, by the measure that corruption should move."""
import numpy as np
import pytest
import torch

from emo_utils.reports import corruptions
from emo_utils.reports.corruptions import SEVERITIES, conditions, corrupt
from synthetic import class_images


@pytest.fixture(scope="module")
def faces():
    images, _ = class_images(num_classes=7, per_class=3, seed=0)  # blobs on noise: edges and fine texture
    return np.maximum(images, 1)  # no black pixel, so every occluded pixel counts as changed


def high_frequency_energy(images):
    x = images.astype(np.float64)
    return float((np.diff(x, axis=1) ** 2).mean() + (np.diff(x, axis=2) ** 2).mean())


def mean_abs_change(before, after):
    return float(np.abs(after.astype(np.float64) - before).mean())


# The measure each corruption must raise (or, with -1, lower) at every step up in severity.
MEASURES = {
    "gaussian_noise": (lambda x, y: float((y.astype(np.float64) - x).std()), 1),
    "gaussian_blur": (lambda x, y: high_frequency_energy(y), -1),
    "jpeg": (mean_abs_change, 1),
    "brightness": (lambda x, y: float(y.mean()), 1),
    "contrast": (lambda x, y: float(y.astype(np.float64).std()), -1),
    "low_resolution": (lambda x, y: high_frequency_energy(y), -1),
    "rotation": (mean_abs_change, 1),
    "eyes_occluded": (lambda x, y: int((x != y).sum()), 1),
    "mouth_occluded": (lambda x, y: int((x != y).sum()), 1),
    "random_square": (lambda x, y: int((x != y).sum()), 1),
}


def test_every_corruption_has_a_measure_and_three_to_five_severities():
    assert set(MEASURES) == set(SEVERITIES)
    assert all(3 <= len(levels) <= 5 for levels in SEVERITIES.values())
    assert len(conditions()) == sum(len(levels) for levels in SEVERITIES.values())


@pytest.mark.parametrize("corruption", list(SEVERITIES))
def test_each_corruption_is_fixed_for_a_seed_and_leaves_torch_rng_alone(faces, corruption):
    state = torch.get_rng_state()
    first = corrupt(faces, corruption, 2, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert first.dtype == np.uint8 and first.shape == faces.shape
    np.testing.assert_array_equal(corrupt(faces, corruption, 2, seed=0), first)
    assert not np.array_equal(first, faces)  # it does change the faces
    if corruption in ("gaussian_noise", "rotation", "random_square"):  # the corruptions that draw
        assert not np.array_equal(corrupt(faces, corruption, 2, seed=1), first)


@pytest.mark.parametrize("corruption", list(SEVERITIES))
def test_each_corruption_grows_worse_with_severity(faces, corruption):
    measure, direction = MEASURES[corruption]
    values = [measure(faces, faces)] + [measure(faces, corrupt(faces, corruption, level))
                                        for level in range(1, len(SEVERITIES[corruption]) + 1)]
    steps = np.diff(values) * direction
    assert (steps > 0).all(), f"{corruption}: {values} is not monotone in severity"


def test_the_bands_cover_the_eyes_and_the_mouth_and_nothing_else(faces):
    eyes = corrupt(faces, "eyes_occluded", 1) != faces
    mouth = corrupt(faces, "mouth_occluded", 1) != faces
    eye_rows, mouth_rows = np.flatnonzero(eyes.any(axis=(0, 2))), np.flatnonzero(mouth.any(axis=(0, 2)))
    assert eye_rows.min() <= corruptions.EYES_ROW <= eye_rows.max() and eye_rows.max() < 24
    assert mouth_rows.min() <= corruptions.MOUTH_ROW <= mouth_rows.max() and mouth_rows.min() >= 24
    assert eyes.all(axis=2)[:, eye_rows].all()  # whole rows, on every face


def test_a_bad_corruption_or_severity_is_named(faces):
    with pytest.raises(KeyError, match="unknown corruption 'fog'; choose one of gaussian_noise"):
        corrupt(faces, "fog", 1)
    with pytest.raises(ValueError, match="jpeg has severities 1 to 3, not 4"):
        corrupt(faces, "jpeg", 4)


def test_the_seen_types_are_the_cores_trained_corruptions_and_the_robust_framings_rotation():
    from emo_utils.core.augment import ROBUST
    from emo_utils.core.corrupt import TRAINED_CORRUPTIONS

    assert ROBUST["rotate"] and corruptions.SEEN == (*TRAINED_CORRUPTIONS, "rotation")
    assert set(corruptions.SEEN) | set(corruptions.HELD_OUT) == set(corruptions.CORRUPTIONS)
    assert not set(corruptions.SEEN) & set(corruptions.HELD_OUT)
    assert corruptions.HELD_OUT == ("brightness", "contrast", "eyes_occluded", "mouth_occluded", "random_square")
