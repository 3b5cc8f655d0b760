"""Training throughput: our loop against a seed-style loop, same model, same data, same augmentation, one run.

Seed-style (what most FER notebooks do): torchvision ImageFolder over the JPEG files, PIL transforms per image,
a DataLoader, NCHW float32. Ours (emo_utils.core.train): the whole split as a uint8 tensor, augmentation per batch on
tensors. Every variant times the same number of optimizer steps after a warm-up, in one run:
- float32, NCHW and channels_last (memory format);
- bf16 autocast with channels_last: what the CPU recipes run (TrainConfig.cpu_bf16, on by default in every
  training notebook's CPU recipe); the headline speed-up is this loop's over the faster seed-style loader;
- with --compile, the same under torch.compile (inductor), which pays a compile of tens of seconds first.
It also measures a float32 matmul peak in the same run, and profiles our recipe's step: the share of its time in
convolutions, batch norm, pooling and the rest.

    python benchmarks/train_throughput.py [--model mini_xception] [--batch-size 64] [--steps 40] [--compile] [--write]
    python benchmarks/train_throughput.py --model vgg_gap --batch-size 128 --augment crop40 --write   # the speedrun's

--write puts the result, with this command line, into reports/benchmarks.md (replacing its earlier result for the
same model and augmentation).
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from torch import nn

from emo_utils.core.augment import make_policy
from emo_utils.core.data import REPO_ROOT, find_dataset, load_dataset
from emo_utils.core.models import build_model, count_flops
from emo_utils.reports.pages import replace_section
from emo_utils.core.config import TrainConfig
from emo_utils.core.distributed import describe_device
from emo_utils.core.run import prepare, train_step

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


def our_step(model_name, data, batch_size, augment, cpu_bf16, channels_last, compile_model=False):
    """A function running one optimizer step of our loop on the batch of positions idx."""
    config = TrainConfig(model=model_name, batch_size=batch_size, augment=augment, optimizer="adam",
                         cpu_bf16=cpu_bf16, channels_last=channels_last)
    run = prepare(config, data, torch.device("cpu"), slice(None), "default" if compile_model else "off")
    run.rng = torch.Generator().manual_seed(0)

    def step(idx):
        train_step(run, idx, 1)
    return step


def batch_positions(step, batch_size, n):
    start = (step * batch_size) % (n - batch_size)
    return torch.arange(start, start + batch_size)


def time_ours(model_name, data, batch_size, steps, warmup, augment="keras_light", cpu_bf16=False,
              channels_last=True, compile_model=False) -> float:
    step = our_step(model_name, data, batch_size, augment, cpu_bf16, channels_last, compile_model)
    n = len(data.split("train")[1])
    for i in range(warmup):
        step(batch_positions(i, batch_size, n))
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(batch_positions(i, batch_size, n))
    return steps * batch_size / (time.perf_counter() - start)


OP_GROUPS = {"convolution": ("conv",), "batch norm": ("batch_norm",), "pooling": ("pool",)}


def step_profile(model_name, data, batch_size, augment, steps=10) -> dict[str, float]:
    """Share of the recipe step's self CPU time in each OP_GROUPS group (forward and backward), the rest 'other'."""
    from torch.profiler import ProfilerActivity, profile

    step = our_step(model_name, data, batch_size, augment, cpu_bf16=True, channels_last=True)
    n = len(data.split("train")[1])
    for i in range(3):
        step(batch_positions(i, batch_size, n))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(3, 3 + steps):
            step(batch_positions(i, batch_size, n))
    shares = dict.fromkeys([*OP_GROUPS, "other"], 0.0)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    for event in events:
        group = next((g for g, keys in OP_GROUPS.items() if any(k in event.key for k in keys)), "other")
        shares[group] += event.self_cpu_time_total / total
    return shares


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
    parser.add_argument("--compile", action="store_true", help="also time the recipe's loop under torch.compile")
    parser.add_argument("--write", action="store_true", help="put the result into reports/benchmarks.md")
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

    timing = (args.model, data, args.batch_size, args.steps, args.warmup, augment)
    variants = {"float32, NCHW": dict(channels_last=False), "float32, channels_last": {},
                "bf16 autocast, channels_last (the CPU recipes)": dict(cpu_bf16=True)}
    if args.compile:
        variants["bf16 autocast, channels_last, torch.compile"] = dict(cpu_bf16=True, compile_model=True)
    ours = {}
    for name, options in variants.items():
        ours[name] = time_ours(*timing, **options)
        print(f"ours, {name}: {ours[name]:8.1f} images/s", flush=True)
    recipe = ours["bf16 autocast, channels_last (the CPU recipes)"]
    fp32 = ours["float32, channels_last"]
    seed_results = {}
    if args.augment == "keras_light":  # the seed-style loop is the same work only with the same transforms and size
        with tempfile.TemporaryDirectory() as tmp:
            for workers in (0, 2):
                loader = seed_style_loader(source, Path(tmp), args.batch_size, workers, args.limit)
                seed_results[workers] = time_seed_style(args.model, data.num_classes, loader, args.steps, args.warmup)
                print(f"seed-style (ImageFolder, PIL transforms, DataLoader workers={workers}, NCHW): "
                      f"{seed_results[workers]:8.1f} images/s")
    seed = max(seed_results.values()) if seed_results else None
    if seed:
        print(f"speed-up over the faster seed-style loader: {recipe / seed:.2f}x as the CPU recipes train "
              f"(bf16 autocast), {fp32 / seed:.2f}x in float32")
    shares = step_profile(args.model, data, args.batch_size, augment)
    profile_text = ", ".join(f"{group} {share:.0%}" for group, share in shares.items())
    print(f"the recipe's step, self CPU time: {profile_text}")
    achieved = fp32 * train_flops_per_image
    print(f"achieved {achieved / 1e9:.2f} GFLOP/s in float32 = {achieved / peak:.1%} of the float32 matmul peak")

    if args.write:
        rows = [(f"ours, {name}", value) for name, value in ours.items()]
        rows += [(f"seed-style, {w} DataLoader workers (float32, NCHW)", v) for w, v in seed_results.items()]
        table = "| loop | images/s | vs the seed-style loop |\n|---|---:|---:|\n" + "".join(
            f"| {name} | {value:.1f} | {f'{value / seed:.2f}x' if seed else 'n/a'} |\n" for name, value in rows)
        verdict = (f"Our loop as the CPU recipes train (bf16 autocast, channels_last): **{recipe / seed:.2f}x** the "
                   f"faster seed-style loader; in float32, {fp32 / seed:.2f}x." if seed else
                   "No seed-style row: it applies the keras_light transforms to 48 px images, other work.")
        body = (f"`python benchmarks/{Path(__file__).name} {' '.join(argv if argv is not None else sys.argv[1:])}` "
                f"on {describe_device(torch.device('cpu'))}, {platform.machine()}, torch {torch.__version__}, "
                f"model {args.model}, batch {args.batch_size}, {args.steps} timed steps after {args.warmup} "
                f"warm-up.\n\n{table}\n{verdict} bf16 autocast: {recipe / fp32:.2f}x our float32 loop. Where the "
                f"recipe's step spends its time (torch profiler, self CPU time): {profile_text}. Float32 achieves "
                f"{achieved / 1e9:.2f} GFLOP/s ({forward_flops / 1e6:.1f} MFLOPs forward per {image_size} px image, "
                f"times 3), {achieved / peak:.1%} of a float32 matmul peak of {peak / 1e9:.1f} GFLOP/s measured in "
                "the same run.")
        out = replace_section(REPO_ROOT / "reports" / "benchmarks.md",
                              f"Training throughput ({args.model}, {args.augment})", body)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
