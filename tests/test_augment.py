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
