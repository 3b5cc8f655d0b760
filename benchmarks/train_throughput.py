"""Training throughput: our loop against a seed-style loop, same model, same data, same augmentation, one run.

Seed-style (what most FER notebooks do): torchvision ImageFolder over the JPEG files, PIL transforms per image,
a DataLoader, NCHW float32. Ours (emo_utils.train): the whole split as a uint8 tensor, augmentation per batch on
tensors, channels_last. Both time the same number of optimizer steps after a warm-up. It also measures a float32
matmul peak in the same run and reports the FLOP/s the training step achieves against it, and our loop again with
bf16 autocast on the CPU (TrainConfig.cpu_bf16), as a ratio against our float32 loop.

    python benchmarks/train_throughput.py [--model mini_xception] [--batch-size 64] [--steps 40] [--write]
    python benchmarks/train_throughput.py --model vgg_gap --batch-size 128 --augment crop40 --write   # the speedrun's

--write appends the result, with this command line, to reports/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from torch import nn

from emo_utils.augment import make_policy
from emo_utils.data import REPO_ROOT, find_dataset, load_dataset
from emo_utils.losses import make_loss
from emo_utils.models import build_model, count_flops
from emo_utils.train import TrainConfig, _train_step, make_optimizer

# Our loop's augmentation: keras_light matches the seed-style transforms; crop40 is the flagship speedrun's.
AUGMENT = {"keras_light": "keras_light", "crop40": {"crop": 40, "erase": 0.5}}


def seed_style_loader(source: Path, workdir: Path, batch_size: int, workers: int, limit: int):
    """ImageFolder + PIL transforms equivalent to the 'keras_light' policy (rotation 10, shift 5 px, zoom 0.1, flip)."""
    from torchvision import datasets, transforms

    root = workdir / "train"
    if not root.exists():
        with zipfile.ZipFile(source) as archive:  # only training JPEGs, into a temporary folder deleted afterwards
            members = [m for m in archive.namelist() if "/train/" in f"/{m}" and m.lower().endswith(".jpg")][:limit]
            for m in members:
                target = root / Path(m).parent.name / Path(m).name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(m))
    transform = transforms.Compose([
        transforms.Grayscale(1),
        transforms.RandomAffine(degrees=10, translate=(5 / 48, 5 / 48), scale=(0.9, 1.1)),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([0.507], [0.255]),
    ])
    dataset = datasets.ImageFolder(str(root), transform=transform)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                       drop_last=True, persistent_workers=workers > 0)


def time_seed_style(model_name, num_classes, loader, steps, warmup) -> float:
    torch.manual_seed(0)
    model = build_model(model_name, num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    batches, done, start = iter(loader), 0, None
    for step in range(warmup + steps):
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        if step == warmup:
            start = time.perf_counter()
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        done += len(y) if step >= warmup else 0
    return done / (time.perf_counter() - start)


def time_ours(model_name, data, batch_size, steps, warmup, augment="keras_light", cpu_bf16=False) -> float:
    config = TrainConfig(model=model_name, batch_size=batch_size, augment=augment, optimizer="adam", cpu_bf16=cpu_bf16)
    torch.manual_seed(0)
    model = build_model(model_name, data.num_classes).to(memory_format=torch.channels_last)
    optimizer, loss_fn = make_optimizer(config, model), make_loss("ce")
    policy, device = make_policy(config.augment), torch.device("cpu")
    images, labels = (torch.from_numpy(a) for a in data.split("train"))
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(images), generator=gen)
    start = None
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        idx = order[(step * batch_size) % (len(images) - batch_size):][:batch_size]
        _train_step(model, optimizer, loss_fn, config, policy, images[idx], labels[idx], gen, device, data.num_classes)
    return steps * batch_size / (time.perf_counter() - start)


def matmul_peak(size=2048, repeats=10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size ** 3 * repeats / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mini_xception")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--limit", type=int, default=8000, help="training JPEGs extracted for the seed-style loader")
    parser.add_argument("--augment", choices=sorted(AUGMENT), default="keras_light",
                        help="our loop's augmentation (the seed-style loop always uses keras_light)")
    parser.add_argument("--write", action="store_true", help="append the result to reports/benchmarks.md")
    args = parser.parse_args(argv)

    source = find_dataset()
    if source.suffix != ".zip":
        sys.exit(f"{source}: this benchmark reads the Kaggle zip (the seed-style loop needs its JPEG files)")
    data = load_dataset(source)
    threads = torch.get_num_threads()
    peak = matmul_peak()
    augment = AUGMENT[args.augment]
    image_size = make_policy(augment).crop or 48  # FLOPs at the size the loop trains on
    forward_flops = count_flops(build_model(args.model, data.num_classes), image_size)
    train_flops_per_image = 3 * forward_flops  # backward costs about twice the forward pass
    print(f"{args.model}: {forward_flops / 1e6:.1f} MFLOPs forward per {image_size} px image; matmul peak "
          f"{peak / 1e9:.1f} GFLOP/s on {threads} threads")

    ours = time_ours(args.model, data, args.batch_size, args.steps, args.warmup, augment)
    print(f"ours (uint8 tensor, batch augmentation, channels_last): {ours:8.1f} images/s")
    ours_bf16 = time_ours(args.model, data, args.batch_size, args.steps, args.warmup, augment, cpu_bf16=True)
    print(f"ours with bf16 autocast (cpu_bf16=True): {ours_bf16:8.1f} images/s = {ours_bf16 / ours:.2f}x our float32 loop")
    seed_results = {}
    if args.augment == "keras_light":  # the seed-style loop is the same work only with the same transforms and size
        with tempfile.TemporaryDirectory() as tmp:
            for workers in (0, 2):
                loader = seed_style_loader(source, Path(tmp), args.batch_size, workers, args.limit)
                seed_results[workers] = time_seed_style(args.model, data.num_classes, loader, args.steps, args.warmup)
                print(f"seed-style (ImageFolder, PIL transforms, DataLoader workers={workers}, NCHW): "
                      f"{seed_results[workers]:8.1f} images/s")
        ratio = ours / max(seed_results.values())
        print(f"speed-up over the faster seed-style loader: {ratio:.2f}x")
    achieved = ours * train_flops_per_image
    print(f"achieved {achieved / 1e9:.2f} GFLOP/s in float32 = {achieved / peak:.1%} of the float32 matmul peak")

    if args.write:
        out = REPO_ROOT / "reports" / "benchmarks.md"
        if not out.exists():
            out.write_text("# Benchmarks\n\n_Appended by the scripts in benchmarks/; each line states its command._\n")
        seed_text = ("".join(f"| seed-style, {w} DataLoader workers | {v:.1f} |\n" for w, v in seed_results.items())
                     + (f"\nSpeed-up over the faster seed-style loader: **{ratio:.2f}x**." if seed_results else
                        "\nNo seed-style row: it applies the keras_light transforms to 48 px images, other work."))
        with open(out, "a") as f:
            f.write(f"\n## Training throughput, {dt.date.today()}\n\n"
                    f"`python benchmarks/{Path(__file__).name} {' '.join(argv or sys.argv[1:])}` on "
                    f"{platform.machine()} CPU, {threads} threads, torch {torch.__version__}, model {args.model}, "
                    f"batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up.\n\n"
                    f"| loop | images/s |\n|---|---:|\n| ours ({args.augment}) | {ours:.1f} |\n"
                    f"| ours ({args.augment}), bf16 autocast | {ours_bf16:.1f} |\n" + seed_text
                    + f" Achieved {achieved / 1e9:.2f} GFLOP/s in float32 ({forward_flops / 1e6:.1f} MFLOPs forward per "
                    f"{image_size} px image, times 3) against a float32 matmul peak of {peak / 1e9:.1f} GFLOP/s measured "
                    f"in the same run ({achieved / peak:.1%}). bf16 autocast on the CPU: **{ours_bf16 / ours:.2f}x** "
                    f"our float32 loop.\n")
        print(f"appended to {out}")


if __name__ == "__main__":
    main()
