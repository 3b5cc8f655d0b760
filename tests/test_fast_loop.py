"""The loop's speed settings change how fast it runs, never what it computes or saves: the foreach EMA equals the
per-tensor one, the CUDA settings switch what they say, a compiled run saves the keys an eager one saves."""
from __future__ import annotations

import copy
import functools

import pytest
import torch

from emo_utils.core.models import build_model
from emo_utils.core.config import TrainConfig
from emo_utils.core.checkpoint import load_checkpoint
from emo_utils.core.distributed import use_fast_cuda_kernels
from emo_utils.core.step import update_ema
from emo_utils.core.train import train
from synthetic import make_learnable_data


@torch.no_grad()
def update_ema_per_tensor(ema_model, model, decay):
    """The EMA as train.py computed it before foreach ops: one lerp_ and one copy_ per tensor."""
    for ema_p, p in zip(ema_model.parameters(), model.parameters()):
        ema_p.lerp_(p, 1 - decay)
    for ema_b, b in zip(ema_model.buffers(), model.buffers()):
        ema_b.copy_(b)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_foreach_ema_equals_the_per_tensor_one(device):
    torch.manual_seed(0)
    model = build_model("mini_xception", 7, widths=(8, 16)).to(device)  # batch norm: float and int64 buffers
    foreach_ema, per_tensor_ema = copy.deepcopy(model), copy.deepcopy(model)
    for step in range(5):
        with torch.no_grad():  # a training step's worth of change, batch-norm statistics included
            for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
                t.add_(torch.randn_like(t))
            for b in model.buffers():
                if not b.is_floating_point():
                    b.add_(1)
        update_ema(foreach_ema, model, 0.9)
        update_ema_per_tensor(per_tensor_ema, model, 0.9)
    got, wanted = foreach_ema.state_dict(), per_tensor_ema.state_dict()
    assert got.keys() == wanted.keys()
    assert all(torch.equal(got[k], wanted[k]) for k in got), [k for k in got if not torch.equal(got[k], wanted[k])]
    first_weight = next(name for name, _ in model.named_parameters())
    assert not torch.equal(got[first_weight], model.state_dict()[first_weight]), "the EMA lags the weights"


def test_ema_of_a_model_without_buffers():
    model, ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = ema.weight.detach().clone()
    update_ema(ema, model, 0.5)
    assert torch.allclose(ema.weight, (before + model.weight) / 2)


def test_fast_cuda_kernels_turn_on_cudnn_autotuning_and_tf32_matmuls():
    saved = torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()
    try:
        torch.backends.cudnn.benchmark = False
        torch.set_float32_matmul_precision("highest")
        use_fast_cuda_kernels()
        assert torch.backends.cudnn.benchmark and torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cuda.matmul.allow_tf32  # read through the old name too: torch refuses a mix of APIs
    finally:
        torch.backends.cudnn.benchmark = saved[0]
        torch.set_float32_matmul_precision(saved[1])


def test_a_cpu_run_leaves_the_cuda_settings_alone(tmp_path):
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        config = TrainConfig(model="mini_xception", model_kwargs={"widths": (8, 16)}, batch_size=32, epochs=1)
        train(config, make_learnable_data(train_per_class=10), tmp_path, device="cpu", progress=False)
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = saved


@pytest.mark.slow
def test_a_compiled_run_saves_what_an_eager_run_saves(tmp_path, monkeypatch):
    # Dynamo traces the step as it would for inductor, then runs the graph eagerly: this checks our wiring (the
    # keys saved, the EMA, the meta) in seconds; inductor's own code generation takes minutes on 2 CPU cores.
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    data = make_learnable_data(train_per_class=10)
    config = TrainConfig(model="mini_xception", model_kwargs={"widths": (8, 16)}, batch_size=32, epochs=1, ema_decay=0.9)
    eager = train(config, data, tmp_path / "eager", device="cpu", progress=False)
    compiled = train(config, data, tmp_path / "compiled", device="cpu", progress=False, compile_mode="default")
    assert compiled.meta["compile"] == "default" and "compile" not in eager.meta
    for name in ("final.pt", "last.pt"):
        e, c = load_checkpoint(tmp_path / "eager" / name), load_checkpoint(tmp_path / "compiled" / name)
        for key in ("model", "ema", "raw_model"):
            if key in e:
                assert list(c[key]) == list(e[key]), f"{name} {key}: keys differ"  # no _orig_mod. prefix
                assert all(torch.allclose(c[key][k].float(), e[key][k].float(), atol=1e-2) for k in e[key])
    with pytest.raises(ValueError, match="unknown compile mode"):
        train(config, data, tmp_path / "bad", device="cpu", progress=False, compile_mode="fast")
