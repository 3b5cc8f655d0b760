"""Batch augmentation draws its randomness from the epoch's generator, on the device, without host syncs."""
import pytest
import torch

from emo_utils.core.augment import mixup, sample_beta, sample_gamma


def test_gamma_draws_have_the_mean_and_variance_of_the_gamma_distribution():
    gen = torch.Generator().manual_seed(0)
    for shape in (0.2, 0.5, 1.0, 4.0):  # below 1 takes the boosted branch
        draws = sample_gamma(shape, 100_000, gen, "cpu")
        assert (draws > 0).all()
        # Gamma(k, 1): mean k, variance k. Tolerances are ~6 standard errors at n = 100,000.
        assert abs(draws.mean().item() - shape) < 6 * (shape / 1e5) ** 0.5
        assert abs(draws.var().item() / shape - 1) < 0.05


@pytest.mark.slow
def test_beta_draws_match_beta_alpha_alpha():
    gen = torch.Generator().manual_seed(1)
    alpha = 0.4
    draws = torch.stack([sample_beta(alpha, gen, "cpu") for _ in range(20_000)])
    assert ((draws >= 0) & (draws <= 1)).all()
    assert abs(draws.mean().item() - 0.5) < 0.01
    assert abs(draws.var().item() - 1 / (4 * (2 * alpha + 1))) < 0.005  # Beta(a, a): 1 / (4 (2a + 1))


def test_mixup_is_one_convex_mix_of_each_image_and_its_partner_and_repeats_with_the_generator():
    x = torch.rand(8, 1, 4, 4)
    targets = torch.eye(8)  # one class per image, so each soft row names the image's partner
    mixed, soft = mixup(x, targets, 0.4, torch.Generator().manual_seed(3))
    again, soft_again = mixup(x, targets, 0.4, torch.Generator().manual_seed(3))
    assert torch.equal(mixed, again) and torch.equal(soft, soft_again)
    assert torch.allclose(soft.sum(1), torch.ones(8))
    lams = soft.diagonal()  # image i keeps weight lam on its own class (1 where it drew itself as partner)
    mixed_rows = lams < 1 - 1e-6
    assert mixed_rows.any()
    assert torch.allclose(lams[mixed_rows], lams[mixed_rows][0].expand(int(mixed_rows.sum())))  # one lam a batch
    for i in range(8):
        partner = soft[i].clone()
        partner[i] = 0
        j = int(partner.argmax()) if mixed_rows[i] else i
        assert torch.allclose(mixed[i], lams[i] * x[i] + (1 - lams[i]) * x[j], atol=1e-6)


def test_framing_draws_follow_the_measured_percentiles_and_stay_within_the_outer_ones():
    from emo_utils.core.augment import sample_percentiles

    measured = [0.78, 0.92, 1.01, 1.15, 1.50]  # the photo default's scale in benchmarks.md
    draws = sample_percentiles(measured, 200_000, torch.Generator().manual_seed(0), "cpu")
    assert draws.min() >= 0.78 and draws.max() <= 1.50
    assert torch.allclose(torch.quantile(draws, torch.tensor([0.25, 0.5, 0.75])), torch.tensor(measured[1:4]),
                          atol=0.005)
    assert abs((draws == 0.78).float().mean() - 0.05) < 0.005  # the tail below p5 held at p5


def test_a_fixed_framing_is_the_similarity_transform_framing_py_measures():
    import cv2
    import numpy as np

    from emo_utils.core.augment import framing_affine
    from emo_utils.predict.framing import affine3, similarity

    scale, dx, dy, angle = 1.2, 3.0, -2.0, 12.0
    fixed = {"scale": [scale] * 5, "dx": [dx] * 5, "dy": [dy] * 5, "angle": [angle] * 5}
    yy, xx = np.mgrid[0:48, 0:48]
    # No symmetry that could hide a wrong sign of the turn or the shift.
    face = (np.sin(xx / 5.0) + np.cos(yy / 7.0) + (xx > 30) * (yy < 15)).astype(np.float32)
    out = framing_affine(torch.from_numpy(face)[None, None], fixed, torch.Generator().manual_seed(0))[0, 0].numpy()
    # The face zoomed and turned counter-clockwise about its centre, its centre then moved by (dx, dy): cv2's
    # rotation matrix in OpenCV's pixel-centre convention, as predict/framing.py's similarity() reads a crop.
    matrix = cv2.getRotationMatrix2D((23.5, 23.5), angle, scale)
    matrix[:, 2] += (dx, dy)
    measured = similarity(affine3(matrix))  # framing.py reads this matrix back as the framing asked for
    assert np.allclose([measured[q] for q in ("scale", "dx", "dy", "angle")], [scale, dx, dy, angle])
    expected = cv2.warpAffine(face, matrix, (48, 48), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    inner = (slice(12, 36), slice(12, 36))  # away from the borders, where the two paddings differ
    assert np.abs(out[inner] - expected[inner]).max() < 0.02
    mirrored = framing_affine(torch.from_numpy(face)[None, None], {**fixed, "angle": [-angle] * 5},
                              torch.Generator().manual_seed(0))[0, 0].numpy()
    assert np.abs(mirrored[inner] - expected[inner]).max() > 0.2  # the other turn is another picture
