"""Training-time corruptions (core/corrupt.py), the consistency loss between a face and its corrupted copy
(TrainConfig.consistency), and fine-tuning from a finished model (TrainConfig.init_weights)."""
import re

import pytest
import torch

from emo_utils.core import corrupt
from emo_utils.core.augment import AugmentPolicy, augment_batch, augment_pair, make_policy
from emo_utils.core.checkpoint import CheckpointError, load_checkpoint
from emo_utils.core.config import TrainConfig
from emo_utils.core.losses import jensen_shannon, make_loss
from emo_utils.core.run import Run, RunState, train_step
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


def test_a_policy_can_train_past_the_suites_harshest_severity():
    # corrupt_ranges replaces a kind's default range; the others keep theirs, and the draws stay seeded.
    x = torch.full((200, 1, 48, 48), 0.5)
    noise_only = ("gaussian_noise",)
    default = corrupt.random_corruptions(x, 1.0, noise_only, torch.Generator().manual_seed(0))
    harsh = corrupt.random_corruptions(x, 1.0, noise_only, torch.Generator().manual_seed(0),
                                       {"gaussian_noise": [0.3, 0.3]})
    assert (default - x).std(dim=(1, 2, 3)).max() < 0.17  # at most the suite's sigma 0.16
    assert ((harsh - x).std(dim=(1, 2, 3)) > 0.25).all()  # every face at sigma 0.3 (a little less: clamping)
    checker = ((torch.arange(48)[:, None] + torch.arange(48)[None]) % 2).float().expand(8, 1, 48, 48).clone()
    tiny = corrupt.random_corruptions(checker, 1.0, ("low_resolution",), torch.Generator().manual_seed(0),
                                      {"low_resolution": [8, 8], "gaussian_noise": [0.3, 0.3]})
    wide_blur = corrupt.random_corruptions(checker, 1.0, ("gaussian_blur",), torch.Generator().manual_seed(0),
                                           {"gaussian_blur": [4.0, 4.0]})
    assert tiny.std() < 0.05 * checker.std() and wide_blur.std() < 0.05 * checker.std()
    worst = corrupt.random_corruptions(x, 1.0, ("jpeg",), torch.Generator().manual_seed(0), {"jpeg": [1, 1]})
    assert worst.shape == x.shape


def test_a_policy_naming_an_unknown_corruption_range_is_refused():
    with pytest.raises(KeyError, match="unknown corruption.*gaussian_noise"):
        make_policy({"corrupt": 0.5, "corrupt_ranges": {"gausian_noise": [0.01, 0.3]}})
    assert make_policy({"corrupt": 0.5, "corrupt_ranges": {"jpeg": [2, 50]}}).corrupt_ranges == {"jpeg": [2, 50]}
    # A range the corruption cannot draw from is refused here, not inside torch.randint or as NaN blur kernels.
    for name, strengths in [("jpeg", [50, 2]), ("low_resolution", [0, 8]), ("gaussian_blur", [0, 2]),
                            ("gaussian_noise", [0.1]), ("gaussian_noise", 0.1)]:
        with pytest.raises(ValueError, match=re.escape(f"corrupt_ranges['{name}'] is {strengths}")):
            make_policy({"corrupt": 0.5, "corrupt_ranges": {name: strengths}})


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


def bright_dot_faces(n=64):
    """Dark faces with one bright 3x3 dot each, away from the borders: where the dot lands shows the geometry."""
    gen = torch.Generator().manual_seed(7)
    images = torch.zeros(n, 48, 48, dtype=torch.uint8)
    rows, cols = torch.randint(12, 34, (2, n), generator=gen)
    for face, r, c in zip(images, rows, cols):
        face[r - 1:r + 2, c - 1:c + 2] = 255
    return images


def dot_centre(views):
    weight = (views[:, 0] - views[:, 0].amin((1, 2), keepdim=True)).clamp_min(0)
    ys, xs = torch.meshgrid(torch.arange(views.shape[-2]).float(), torch.arange(views.shape[-1]).float(), indexing="ij")
    total = weight.sum((1, 2))
    return torch.stack([(weight * ys).sum((1, 2)) / total, (weight * xs).sum((1, 2)) / total], 1)


def test_a_pair_is_one_face_clean_and_corrupted_under_one_framing_crop_and_flip():
    images = bright_dot_faces()
    policy = AugmentPolicy(crop=40, rotate=15, scale=0.1, corrupt=1.0, corruptions=("gaussian_blur",))
    clean, blurred = augment_pair(images, policy, torch.Generator().manual_seed(0))
    assert clean.shape == blurred.shape == (64, 1, 40, 40)
    # A blur spreads the dot but keeps its centre: the two views of a face put it in the same place, while the
    # views of one face under two draws of the geometry do not.
    assert (dot_centre(clean) - dot_centre(blurred)).abs().max() < 0.5
    redrawn, _ = augment_pair(images, policy, torch.Generator().manual_seed(1))
    assert (dot_centre(clean) - dot_centre(redrawn)).abs().amax(1).median() > 2
    assert ((clean - blurred).abs().flatten(1).amax(1) > 0.1).all()  # every face's second view is corrupted
    # The corrupted view is exactly the policy's ordinary batch from the same generator: a consistency run draws
    # what a plain robust run draws, and adds the clean view beside it.
    torch.testing.assert_close(blurred, augment_batch(images, policy, torch.Generator().manual_seed(0)))


def test_the_jensen_shannon_divergence_is_zero_for_one_answer_symmetric_and_at_most_ln_2():
    a, b = torch.randn(16, 7, generator=torch.Generator().manual_seed(0)), torch.randn(16, 7)
    assert jensen_shannon(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert jensen_shannon(a, b).item() == pytest.approx(jensen_shannon(b, a).item(), rel=1e-5)
    certain = torch.full((4, 7), -50.0)
    opposite = certain.clone()
    certain[:, 0], opposite[:, 1] = 50.0, 50.0
    assert jensen_shannon(certain, opposite).item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), rel=1e-3)
    assert 0 < jensen_shannon(a, b).item() < jensen_shannon(certain, opposite).item()


def consistency_run(consistency, policy, images, labels):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40 * 40, 3))
    return Run(config=TrainConfig(consistency=consistency, channels_last=False), device=torch.device("cpu"),
               shard=slice(None), compile_mode="off", num_classes=3, images=images, labels=labels, val_images=None,
               val_labels=None, policy=policy, flip_bits=None, teacher=None, teacher_weight=None, model=model,
               net=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=make_loss("ce", 0.1),
               plateau=None, ema_model=None, state=RunState(planned_epochs=1), rng=torch.Generator().manual_seed(0))


def test_a_consistency_step_learns_from_both_views_and_their_divergence():
    images, labels = bright_dot_faces(8), torch.tensor([0, 1, 2, 1, 0, 2, 2, 1])
    policy = AugmentPolicy(crop=40, corrupt=0.7)
    run = consistency_run(12.0, policy, images, labels)
    clean, corrupted = augment_pair(images, policy, torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = run.model(clean), run.model(corrupted)
    expected = make_loss("ce", 0.1)(torch.cat([a, b]), torch.cat([labels, labels])) + 12.0 * jensen_shannon(a, b)
    loss, logits = train_step(run, torch.arange(8), 1)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logits, b)  # the corrupted views', as an ordinary robust step would report
    assert jensen_shannon(a, b) > 0


def test_consistency_without_corruptions_is_refused_before_training(data, tmp_path):
    plain = TrainConfig(**{**FAST, "consistency": 12.0})
    with pytest.raises(ValueError, match="consistency=12.0 compares each face with its corrupted copy: give the "
                                         "augment policy corrupt > 0"):
        train(plain, data, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


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
