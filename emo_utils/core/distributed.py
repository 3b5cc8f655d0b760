"""Data parallel training under torchrun: the few collective calls train.py needs, and nothing when alone; and the
device a run trains on: its fast CUDA settings, and its name as a report gives it (CPU model, bf16 flags, threads).

torchrun starts one process per device and sets RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT;
setup() joins the group (NCCL on GPUs, gloo on CPU). Without torchrun every function here is a no-op,
so the single-process loop pays nothing for it.

How the loop shares work (see train.py): every rank holds the whole uint8 dataset, draws the same epoch
order and augments the same global batch from the same seeded generator, then keeps its own slice of it.
So N ranks see exactly the images and augmentations one process sees with the combined batch, and
DistributedDataParallel's gradient averaging makes the update the same, up to float summation order.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device | None) -> torch.device | None:
    """Join the process group when started by torchrun; returns the device this rank should use."""
    if not launched_by_torchrun():
        return device
    if not dist.is_initialized():
        on_gpu = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
        dist.init_process_group(backend="nccl" if on_gpu else "gloo")
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu") if device is None else torch.device(device)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def sum_across_ranks(t: torch.Tensor) -> torch.Tensor:
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def from_main(value):
    """Rank 0's value of a picklable object on every rank (plans that depend on wall time must agree)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model: torch.nn.Module, device: torch.device, sync_batchnorm: bool) -> torch.nn.Module:
    """The module the training step calls: the model itself alone, a DistributedDataParallel wrapper in a group.

    Batch norm normalises over each rank's share of the batch unless sync_batchnorm (GPU only in torch:
    its SyncBatchNorm has no CPU kernel), so a BN net under DDP matches one process only with it."""
    if not active():
        return model
    if sync_batchnorm:
        if device.type != "cuda":
            raise ValueError("sync_batchnorm needs CUDA: torch's SyncBatchNorm has no CPU kernel. Set "
                             "sync_batchnorm=False for gloo on CPU (each rank then normalises its own share).")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def end_rank(exit_code: int = 0):
    """End a torchrun process: destroy the group, flush the output, and leave without interpreter teardown.

    Why not return: once DistributedDataParallel has wrapped a model, torch (2.14, gloo) keeps the process group
    alive past destroy_process_group (its C++ side holds references we cannot drop), so its threads (gloo_tcp_loop,
    two pt_gloo_runloop) still run when Python tears down and C++ destroys its statics. On a loaded machine that
    teardown aborted rank 0 with "terminate called without an active exception" (SIGABRT, exit -6) after a
    finished run. Everything a rank writes is written and fsynced before this is called; os._exit skips only
    the teardown."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


# ---------------------------------------------------------------- the device

def use_fast_cuda_kernels() -> None:
    """cuDNN autotuning (a run's input shapes never change, so the search pays once) and TF32 for the float32
    matmuls autocast leaves in float32. cuDNN convolutions already use TF32 by default."""
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")


def default_collective_device() -> torch.device:
    """NCCL reduces CUDA tensors only; gloo takes CPU ones."""
    if active() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU model and the flags that set its bf16 speed (AMX, AVX512-BF16): a time-capped recipe trains a
    different model on a different CPU, so a report names the CPU beside the minutes."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines()[:40] if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    vector = "AVX512-BF16" if "avx512_bf16" in flags else "AVX-512" if "avx512f" in flags else "no AVX-512"
    return f"{fields.get('model name', platform.machine())}, {vector}, {'AMX' if 'amx_bf16' in flags else 'no AMX'}"


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions fast (AVX512-BF16 or AMX). Without them oneDNN emulates bf16, about
    13x slower than fp32 on the flagship (measured on an AVX2-only EPYC: 16.6 s against 1.29 s a step)."""
    name = cpu_name()
    return "AVX512-BF16" in name or ", AMX" in name


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"
    return name if world_size() == 1 else f"{world_size()} x {name} (torchrun, DDP)"
