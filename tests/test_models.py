"""Every registered model: any class count, a backward pass in channels_last, sizes; and each seed family's
defining structure (two convs, three convs with dropout, residual shortcuts, UNet skips)."""
import pytest
import torch
from torch import nn

from emo_utils.core.models import REGISTRY, build_model, count_flops, count_params

SEED_MODELS = ("residual_gap", "the_model", "cnn3", "unet_classifier")


def convs(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_model_gives_one_logit_per_class_and_trains_in_channels_last(name):
    torch.manual_seed(0)
    for num_classes in (6, 7, 8):
        model = build_model(name, num_classes).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 1, 48, 48)).shape == (2, num_classes)
    model = build_model(name, 7).train().to(memory_format=torch.channels_last)
    x = torch.randn(4, 1, 48, 48).contiguous(memory_format=torch.channels_last)
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 6])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert count_params(model) > 0 and count_flops(model) > 0


@pytest.mark.parametrize("name", SEED_MODELS)
@pytest.mark.parametrize("size", (40, 44, 57))
def test_seed_models_take_other_input_sizes(name, size):
    model = build_model(name, 8).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, size, size)).shape == (2, 8)


def test_residual_gap_has_shortcuts_and_the_plain_variant_is_the_source_size():
    model = build_model("residual_gap", 7)
    blocks = [m for m in model.modules() if type(m).__name__ == "ResidualBlock"]
    assert len(blocks) == 3 and all(b.shortcut is not None for b in blocks)
    assert isinstance(model.pool, nn.AdaptiveAvgPool2d)
    assert any(isinstance(m, nn.Dropout) for m in model.modules())
    # The source's ImprovedFER2013Model (blocks without an addition) has 4,821,191 parameters.
    plain = build_model("residual_gap", 7, shortcut=False)
    assert count_params(plain) == 4_821_191
    assert all(b.shortcut is None for b in plain.modules() if type(b).__name__ == "ResidualBlock")


def test_the_model_is_two_convs_then_dense_layers_as_published():
    model = build_model("the_model", 7)
    assert [(c.in_channels, c.out_channels) for c in convs(model)] == [(1, 64), (64, 128)]
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(d.in_features, d.out_features) for d in dense] == [(128 * 12 * 12, 512), (512, 7)]
    assert count_params(model) == 9_515_783  # the seed's TheModel, to the parameter


def test_cnn3_is_three_convs_with_relu_and_pooling_then_dense_with_dropout():
    model = build_model("cnn3", 7)
    assert len(convs(model)) == 3
    kinds = [type(m) for m in model.features]
    assert kinds.count(nn.ReLU) == 3 and kinds.count(nn.MaxPool2d) == 3
    assert any(isinstance(m, nn.Dropout) and m.p > 0 for m in model.classifier)
    assert sum(isinstance(m, nn.Linear) for m in model.classifier) == 2


def test_unet_decoder_receives_the_encoder_features_through_its_skips():
    model = build_model("unet_classifier", 7).eval()
    seen = {}
    model.enc1.register_forward_hook(lambda m, i, out: seen.__setitem__("enc1", out))
    model.enc2.register_forward_hook(lambda m, i, out: seen.__setitem__("enc2", out))
    model.dec1.conv.register_forward_pre_hook(lambda m, args: seen.__setitem__("dec1_in", args[0]))
    model.dec2.conv.register_forward_pre_hook(lambda m, args: seen.__setitem__("dec2_in", args[0]))
    with torch.no_grad():
        model(torch.randn(2, 1, 48, 48))
    w1, w2 = seen["enc1"].shape[1], seen["enc2"].shape[1]
    assert seen["dec1_in"].shape == (2, 2 * w1, 48, 48) and seen["dec2_in"].shape == (2, 2 * w2, 24, 24)
    assert torch.equal(seen["dec1_in"][:, w1:], seen["enc1"])  # [upsampled, skip]
    assert torch.equal(seen["dec2_in"][:, w2:], seen["enc2"])
    assert isinstance(model.gap, nn.AdaptiveAvgPool2d) and model.head.out_channels == 7


def test_unet_default_widths_stay_in_the_cpu_budget():
    # (8, 16, 32): a quarter of the seed's (16, 32, 64) FLOPs, chosen so a 10-minute CPU budget sees several epochs.
    model = build_model("unet_classifier", 7)
    assert 20_000 < count_params(model) < 50_000
    assert 20e6 < count_flops(model) < 40e6
    seed_size = build_model("unet_classifier", 7, widths=(16, 32, 64))
    assert 3.5 < count_flops(seed_size) / count_flops(model) < 4.5


def test_unet_dropout_matches_nn_dropout_in_distribution_and_eval():
    from emo_utils.core.models.unet_classifier import Dropout

    drop = Dropout(0.3).train()
    x = torch.ones(200_000)
    out = drop(x)
    assert abs((out == 0).float().mean().item() - 0.3) < 0.01
    assert torch.allclose(out[out != 0], torch.full_like(out[out != 0], 1 / 0.7))
    assert torch.equal(drop.eval()(x), x)


def test_vgg_gap_is_the_issue_baseline_by_default_and_takes_any_size():
    model = build_model("vgg_gap", 7)
    assert [c.out_channels for c in convs(model)] == [32, 32, 64, 64, 128, 128, 256, 256]
    assert all(c.kernel_size == (3, 3) for c in convs(model))
    # 1.17M parameters: 3x3 kernels of the eight convs, BN scales and shifts, the 256->7 classifier.
    kernels = sum(9 * c.in_channels * c.out_channels for c in convs(model))
    assert count_params(model) == kernels + 2 * sum(c.out_channels for c in convs(model)) + 256 * 7 + 7
    model.eval()
    with torch.no_grad():
        for size in (40, 48):  # trained on 40 px crops, may be evaluated on the whole 48 px face
            assert model(torch.randn(2, 1, size, size)).shape == (2, 7)


def test_vgg_gap_residual_variant_adds_the_input_back():
    model = build_model("vgg_gap", 7, widths=[8, 16], convs=3, residual=True).eval()
    shortcuts = [m for m in model.modules() if type(m).__name__ == "Residual"]
    assert len(shortcuts) == 4  # two per stage: every conv after the stage's first
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        assert torch.allclose(shortcuts[0](x), x + shortcuts[0].body(x))


def test_vgg_gap_standardized_input_ignores_brightness_and_contrast_and_loads_plain_weights():
    torch.manual_seed(0)
    plain = build_model("vgg_gap", 7, widths=[8, 16]).eval()
    model = build_model("vgg_gap", 7, widths=[8, 16], standardize=True).eval()
    model.load_state_dict(plain.state_dict())  # no weights of its own: a fine-tune starts from a plain model
    faces = torch.randn(3, 1, 40, 40)
    with torch.no_grad():
        changed = (model(0.4 * faces + 1.5) - model(faces)).abs().max()  # flatter and brighter: the same answer
        changed_plain = (plain(0.4 * faces + 1.5) - plain(faces)).abs().max()  # the plain net's answer moves
        assert changed < 1e-5 and changed_plain > 1e-3
        blank = torch.full((1, 1, 40, 40), 0.7)
        assert torch.isfinite(model(blank)).all()  # a blank frame is not divided by zero
