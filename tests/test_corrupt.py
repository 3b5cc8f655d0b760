"""Training-time corruptions (core/corrupt.py) and fine-tuning from a finished model (TrainConfig.init_weights)."""
import pytest
import torch

from emo_utils.core import corrupt
from emo_utils.core.augment import AugmentPolicy, augment_batch
from emo_utils.core.checkpoint import CheckpointError, load_checkpoint
from emo_utils.core.config import TrainConfig
from emo_utils.core.train import train
from emo_utils.reports.corruptions import SEVERITIES
from synthetic import FAST, make_learnable_data


def faces(seed=0, n=24):
    return torch.rand(n, 1, 48, 48, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", corrupt.TRAINED_CORRUPTIONS)
def test_each_corruption_changes_every_face_keeps_the_range_and_is_fixed_by_the_generator(name):
    x = faces()
    out = corrupt.CORRUPT[name](x, torch.Generator().manual_seed(1))
    again = corrupt.CORRUPT[name](x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert 0 <= out.min() and out.max() <= 1
    assert torch.equal(out, again)
    assert ((out - x).abs().flatten(1).mean(1) > 0.01).all()  # every face changed, not only some


def test_blur_and_low_resolution_remove_fine_detail():
    checker = ((torch.arange(48)[:, None] + torch.arange(48)[None]) % 2).float().expand(8, 1, 48, 48).clone()
    for name in ("gaussian_blur", "low_resolution"):
        out = corrupt.CORRUPT[name](checker, torch.Generator().manual_seed(0))
        assert out.std() < 0.5 * checker.std(), name  # a 1-px checkerboard is mostly averaged away


def test_the_strength_ranges_reach_the_suites_harshest_severity():
    # Training must cover what FER2013-C asks at severity 3, or its seen group is not seen at all strengths.
    assert corrupt.NOISE_SIGMA[1] >= SEVERITIES["gaussian_noise"][-1]
    assert corrupt.BLUR_SIGMA[1] >= SEVERITIES["gaussian_blur"][-1]
    assert corrupt.JPEG_QUALITY[0] <= SEVERITIES["jpeg"][-1]
    assert corrupt.LOW_RES_SIDE[0] <= SEVERITIES["low_resolution"][-1]
    assert set(corrupt.TRAINED_CORRUPTIONS) < set(SEVERITIES)


def test_the_share_of_corrupted_faces_follows_p():
    x = faces(n=400)
    untouched = corrupt.random_corruptions(x, 0.0, corrupt.TRAINED_CORRUPTIONS, torch.Generator().manual_seed(0))
    assert torch.equal(untouched, x)
    half = corrupt.random_corruptions(x, 0.5, corrupt.TRAINED_CORRUPTIONS, torch.Generator().manual_seed(0))
    changed = ((half - x).abs().flatten(1).amax(1) > 0).float().mean()
    assert 0.4 < changed < 0.6


def test_a_policy_with_corruptions_is_reproducible_and_differs_from_one_without():
    images = (faces(n=32)[:, 0] * 255).to(torch.uint8)
    robust = AugmentPolicy(crop=40, corrupt=1.0)
    a = augment_batch(images, robust, torch.Generator().manual_seed(3))
    b = augment_batch(images, robust, torch.Generator().manual_seed(3))
    plain = augment_batch(images, AugmentPolicy(crop=40), torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == plain.shape == (32, 1, 40, 40)
    assert not torch.allclose(a, plain)


@pytest.fixture(scope="module")
def data():
    return make_learnable_data()


@pytest.mark.slow
def test_init_weights_starts_a_fine_tune_from_the_finished_model(data, tmp_path, monkeypatch):
    from emo_utils.core import data as fer
    monkeypatch.setattr(fer, "REPO_ROOT", tmp_path)  # init_weights is relative to the repository
    base = TrainConfig(**FAST, optimizer="adam", lr=1e-2, scheduler="none", epochs=2)
    train(base, data, tmp_path / "base_run", model_path=tmp_path / "base" / "model.pt", progress=False)
    # lr 0: the fine-tune's weights stay the start's, so they must equal the base's exactly
    tune = TrainConfig(**{**FAST, "optimizer": "sgd", "lr": 0.0, "momentum": 0.0, "scheduler": "none", "epochs": 1,
                          "init_weights": "base/model.pt", "seed": 5})
    tuned = train(tune, data, tmp_path / "tune_run", model_path=tmp_path / "tune" / "model.pt", progress=False)
    start = load_checkpoint(tmp_path / "base" / "model.pt")["model"]
    got = tuned.model.state_dict()
    assert all(torch.equal(start[k].float(), got[k].float()) for k in start if start[k].is_floating_point()
               and "running" not in k)
    assert len(tuned.meta["init_weights_sha256"]) == 64
    with pytest.raises(CheckpointError, match="init_weights"):
        train(TrainConfig(**{**FAST, "init_weights": "nowhere/model.pt"}), data, tmp_path / "bad", progress=False)
