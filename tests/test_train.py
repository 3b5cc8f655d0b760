"""The training loop: it learns, resumes exactly, refuses bad checkpoints, honours its time budget."""
import pytest
import torch

from emo_utils.core.augment import PIXEL_MEAN, PIXEL_STD, AugmentPolicy, augment_batch, make_policy
from emo_utils.core.losses import FocalLoss, SoftCrossEntropy, make_loss
from emo_utils.core.models import build_model, count_flops, count_params
from emo_utils.core.checkpoint import CheckpointError, load_checkpoint, load_trained, save_atomically
from emo_utils.core.config import TrainConfig
from emo_utils.core.train import train
from synthetic import FAST, make_learnable_data


@pytest.fixture(scope="module")
def data():
    return make_learnable_data()


def weights_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow
def test_loop_learns_above_chance(data, tmp_path):
    config = TrainConfig(**FAST, optimizer="adam", lr=1e-2, scheduler="none", epochs=15, augment="flip")
    result = train(config, data, tmp_path, progress=False)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.8 * losses[0]
    assert result.meta["best_val_acc"] > 3 / data.num_classes  # chance is 1/7
    assert {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"} <= set(result.history[0])
    assert not result.model.training


@pytest.mark.parametrize("recipe", [
    dict(optimizer="sgd", nesterov=True, lr=0.05, scheduler="onecycle", label_smoothing=0.1, ema_decay=0.9,
         augment=dict(translate=3, rotate=10, scale=0.1, erase=0.5, mixup=0.4)),
    dict(optimizer="adamax", lr=2e-3, scheduler="plateau", plateau_patience=0, weight_decay=1e-4, loss="focal",
         class_weights=True, augment="heavy"),
])
@pytest.mark.slow
def test_resumed_run_equals_uninterrupted(data, tmp_path, recipe):
    config = TrainConfig(**FAST, epochs=3, **recipe)
    whole = train(config, data, tmp_path / "whole", progress=False)

    class Killed(Exception):
        pass

    def kill_after_epoch_2(epoch, row):
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train(config, data, tmp_path / "killed", on_epoch_end=kill_after_epoch_2, progress=False)
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["state"]["epoch"] == 2
    resumed = train(config, data, tmp_path / "killed", progress=False)
    assert weights_equal(whole.model, resumed.model)
    drop_time = lambda history: [{k: v for k, v in r.items() if k != "seconds"} for r in history]  # noqa: E731
    assert drop_time(whole.history) == drop_time(resumed.history)


def test_finished_model_is_reused_and_retrain_retrains(data, tmp_path):
    config = TrainConfig(**FAST, epochs=1)
    first = train(config, data, tmp_path / "run", model_path=tmp_path / "report" / "model.pt", progress=False)
    assert not first.meta["reused"] and (tmp_path / "report" / "model.pt").exists()
    (tmp_path / "run" / "final.pt").unlink()  # a fresh clone has only the report's model.pt
    again = train(config, data, tmp_path / "run", model_path=tmp_path / "report" / "model.pt", progress=False)
    assert again.meta["reused"] and weights_equal(first.model, again.model)
    retrained = train(config, data, tmp_path / "run", retrain=True, progress=False)
    assert not retrained.meta["reused"]


def test_finished_model_for_other_data_is_not_reused(data, tmp_path):
    config = TrainConfig(**FAST, epochs=1)
    train(config, data, tmp_path, progress=False)
    other = make_learnable_data(seed=5)
    (tmp_path / "last.pt").unlink()
    assert not train(config, other, tmp_path, progress=False).meta["reused"]


# A checkpoint of another config, a truncated or empty one, one that carries code and an unknown model are rows of
# test_bad_inputs.py's table.

def test_a_garbage_checkpoint_gets_a_clear_error(data, tmp_path):
    config = TrainConfig(**FAST, epochs=2)
    train(config, data, tmp_path, progress=False)
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint at all")
    (tmp_path / "final.pt").unlink()
    with pytest.raises(CheckpointError, match=r"last\.pt: unreadable checkpoint.*retrain"):
        train(config, data, tmp_path, progress=False)


@pytest.mark.slow
def test_time_budget_stops_cleanly_and_plans_the_schedule(data, tmp_path):
    config = TrainConfig(**FAST, epochs=500, scheduler="onecycle", optimizer="sgd", lr=0.05, time_budget_min=0.05)
    result = train(config, data, tmp_path, progress=False)
    assert 1 <= result.meta["epochs_run"] < 500
    assert result.meta["wall_seconds"] < 3 * 60 * config.time_budget_min + 5
    assert result.history[-1]["lr"] < 0.2 * config.lr  # the one-cycle schedule ran to its end, not cut mid-way


def test_atomic_save_leaves_old_file_when_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_atomically({"format": 1, "value": torch.ones(3)}, path)

    def broken_save(obj, f):
        f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_atomically({"format": 1, "value": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["value"], torch.ones(3))


def test_load_trained_gives_a_working_model(data, tmp_path):
    train(TrainConfig(**FAST, epochs=1), data, tmp_path, progress=False)
    result = load_trained(tmp_path / "final.pt", device="cpu")
    assert result.model(torch.zeros(2, 1, 48, 48)).shape == (2, data.num_classes)


# ---------------------------------------------------------------- models, losses, augmentation

def test_mini_xception_matches_the_paper_size():
    model = build_model("mini_xception", 7)
    bn_channels = sum(m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    # Keras counts BatchNorm's moving mean and variance as parameters too: 58,423 in Arriaga et al.'s model.
    assert count_params(model) + 2 * bn_channels == 58423
    assert 5e6 < count_flops(model) < 5e7


def test_unknown_config_field_is_named():
    with pytest.raises(TypeError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_focal_loss_with_gamma_zero_is_cross_entropy():
    logits, targets = torch.randn(16, 7), torch.randint(0, 7, (16,))
    ce = torch.nn.functional.cross_entropy(logits, targets)
    assert torch.allclose(FocalLoss(gamma=0.0)(logits, targets), ce, atol=1e-6)
    assert FocalLoss(gamma=2.0)(logits, targets) < ce  # down-weights easy examples


def test_soft_cross_entropy_on_one_hot_equals_hard_targets():
    logits, targets = torch.randn(16, 7), torch.randint(0, 7, (16,))
    loss = SoftCrossEntropy(label_smoothing=0.1)
    one_hot = torch.nn.functional.one_hot(targets, 7).float()
    assert torch.allclose(loss(logits, targets), loss(logits, one_hot), atol=1e-6)
    with pytest.raises(KeyError):
        make_loss("hinge")


def test_augmentation_is_reproducible_and_keeps_shapes():
    images = torch.randint(0, 256, (8, 48, 48), dtype=torch.uint8)
    policy = make_policy("heavy")

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return augment_batch(images, policy, gen)

    assert run(0).shape == (8, 1, 48, 48)
    assert torch.equal(run(0), run(0)) and not torch.equal(run(0), run(1))
    cropped = augment_batch(images, AugmentPolicy(crop=40, flip=False), torch.Generator().manual_seed(0))
    assert cropped.shape == (8, 1, 40, 40)


def test_translate_moves_pixels_without_changing_them():
    images = torch.zeros(16, 48, 48, dtype=torch.uint8)
    images[:, 20, 20] = 255
    out = augment_batch(images, AugmentPolicy(flip=False, translate=4), torch.Generator().manual_seed(3))
    bright, dark = (1 - PIXEL_MEAN) / PIXEL_STD, (0 - PIXEL_MEAN) / PIXEL_STD  # 255 and 0, normalized
    peaks = []
    for image in out[:, 0]:
        assert torch.isclose(image, torch.tensor(bright)).sum() == 1  # the one bright pixel, its value kept
        assert torch.isclose(image, torch.tensor(dark)).sum() == 48 * 48 - 1  # no pixel blended or smeared
        peaks.append((image == image.max()).nonzero()[0] - torch.tensor([20, 20]))
    assert max(p.abs().max() for p in peaks) <= 4
    assert len({tuple(p.tolist()) for p in peaks}) > 4  # each image moves by its own shift


def test_a_list_from_papermill_matches_a_tuple_from_the_notebook(data, tmp_path):
    first = train(TrainConfig(**{**FAST, "model_kwargs": {"widths": (8, 16)}}, epochs=1), data, tmp_path, progress=False)
    again = train(TrainConfig(**{**FAST, "model_kwargs": {"widths": [8, 16]}}, epochs=1), data, tmp_path, progress=False)
    assert not first.meta["reused"] and again.meta["reused"]


def test_weights_over_the_size_limit_are_published_as_float16_and_evaluated_as_such(data, tmp_path, monkeypatch):
    import emo_utils.core.checkpoint as training

    monkeypatch.setattr(training, "MAX_PUBLISHED_BYTES", 0)
    result = train(TrainConfig(**FAST, epochs=1), data, tmp_path / "run", model_path=tmp_path / "model.pt",
                   progress=False)
    published = load_checkpoint(tmp_path / "model.pt")
    assert all(t.dtype == torch.float16 for t in published["model"].values() if t.is_floating_point())
    assert "float16" in published["meta"]["weights_dtype"]
    for name, tensor in result.model.state_dict().items():  # the returned model holds the rounded weights
        assert torch.equal(tensor.float(), published["model"][name].float())
    reloaded = load_trained(tmp_path / "model.pt", device="cpu")
    assert weights_equal(result.model, reloaded.model)


@pytest.mark.slow
def test_cpu_bf16_trains_the_forward_pass_in_bfloat16_and_learns_as_fp32_does(data, tmp_path):
    conv_output_dtypes = []

    def record_conv_dtype(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d) and module.training:
            conv_output_dtypes.append(output.dtype)

    # Four epochs: bf16 is emulated, many times slower than fp32, on a CPU without AVX512-BF16 (CI's among them).
    recipe = dict(FAST, optimizer="adam", lr=1e-2, scheduler="none", epochs=4)
    hook = torch.nn.modules.module.register_module_forward_hook(record_conv_dtype)
    try:
        fp32 = train(TrainConfig(**recipe), data, tmp_path / "fp32", device="cpu", progress=False)
        assert set(conv_output_dtypes) == {torch.float32}  # the default stays fp32: old recipes are unchanged
        conv_output_dtypes.clear()
        bf16 = train(TrainConfig(**recipe, cpu_bf16=True), data, tmp_path / "bf16", device="cpu", progress=False)
    finally:
        hook.remove()
    assert set(conv_output_dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # master weights stay fp32
    losses = {run: [row["train_loss"] for row in result.history] for run, result in (("fp32", fp32), ("bf16", bf16))}
    assert losses["bf16"][-1] < 0.7 * losses["bf16"][0]  # it learns
    # as fp32 does, within bf16's rounding: a loss that kept bf16 gradients or weights would drift far more
    assert all(abs(a - b) < 0.05 * b for a, b in zip(losses["bf16"], losses["fp32"])), losses


@pytest.mark.parametrize("fast_bf16", [True, False])
def test_a_bf16_recipe_on_a_cpu_that_emulates_bf16_says_so_before_training(data, tmp_path, capsys, monkeypatch,
                                                                           fast_bf16):
    from emo_utils.core import distributed
    monkeypatch.setattr(distributed, "cpu_has_bf16", lambda: fast_bf16)
    for bf16 in (False, True):
        train(TrainConfig(**FAST, epochs=1, cpu_bf16=bf16), data, tmp_path / str(bf16), device="cpu", progress=False)
        noted = "note: cpu_bf16 on " in capsys.readouterr().out
        assert noted == (bf16 and not fast_bf16), (bf16, fast_bf16)


def test_a_cpu_is_named_with_the_flags_that_set_its_bf16_speed():
    from emo_utils.core.distributed import cpu_name
    amx = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert cpu_name(amx) == "Intel(R) Xeon(R) Platinum 8488C, AVX512-BF16, AMX"
    epyc = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
    assert cpu_name(epyc) == "AMD EPYC, AVX512-BF16, no AMX"
    assert cpu_name("model name\t: Old\nflags\t\t: fpu avx2\n") == "Old, no AVX-512, no AMX"


def test_refit_trains_on_train_and_val_and_keeps_its_last_epoch(data, tmp_path):
    # Val accuracy wanders on a 3-epoch run at a high rate, so "best on val" and "last" differ unless refit ignores val.
    config = TrainConfig(**FAST, optimizer="sgd", lr=0.5, scheduler="none", epochs=3, augment="flip", refit=True)
    result = train(config, data, tmp_path, progress=False)
    assert result.meta["num_train"] == len(data.split("train")[1]) + len(data.split("val")[1])
    assert result.meta["best_epoch"] == result.meta["epochs_run"] == 3
    last = load_checkpoint(tmp_path / "last.pt")["model"]
    assert all(torch.equal(last[k].to(v.dtype), v) for k, v in result.model.state_dict().items())


@pytest.mark.parametrize("choice", [dict(early_stop_patience=3), dict(scheduler="plateau")])
def test_refit_refuses_choices_made_on_val(data, tmp_path, choice):
    config = TrainConfig(**{**FAST, "scheduler": "none", **choice}, epochs=1, refit=True)
    with pytest.raises(ValueError, match="refit"):
        train(config, data, tmp_path, progress=False)
