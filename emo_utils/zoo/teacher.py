"""The teacher of a distilled run: an ensemble's probabilities on every training face, written once to a file
keyed by the data's checksum (core/distill.py reads it for the training step; TrainConfig.distill_targets names it).

The ensemble is the one notebook 30 chose on val: its metrics.json names the members, their weights and each
member's test-time views; each member's views' logits are averaged, as everywhere else.

    python -m emo_utils.zoo.teacher [--ensemble reports/ensemble/metrics.json] [--out reports/ensemble/teacher_train.npz] [--bf16]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ..core import data as fer
from ..core.checkpoint import load_trained
from ..core.inference import default_device, predict_logits, softmax
from ..paths import REPORTS_DIR, trained_models

DEFAULT_ENSEMBLE = REPORTS_DIR / "ensemble" / "metrics.json"
DEFAULT_TEACHER = REPORTS_DIR / "ensemble" / "teacher_train.npz"


def ensemble_members(metrics_path: Path, reports_dir: Path | None = None) -> dict[str, tuple[Path, str, float]]:
    """{member: (model file, test-time views, weight)} of the ensemble an ensemble report's metrics.json records."""
    prov = json.loads(Path(metrics_path).read_text())["provenance"]
    files = trained_models(reports_dir, ablations=True)
    missing = sorted(set(prov["members"]) - set(files))
    if missing:
        raise FileNotFoundError(f"{metrics_path} names members without weights under reports/: {missing}. Train "
                                "them (make zoo) or run notebook 30 again to choose from the models there are.")
    return {name: (files[name], prov["member_views"][name], weight) for name, weight in prov["members"].items()}


def teacher_probabilities(members: dict[str, tuple[Path, str, float]], images_u8: np.ndarray, device=None,
                          bf16: bool = False) -> np.ndarray:
    """The ensemble's probabilities (N, C) on `images_u8`: each member's softmax under its own views, weighted.
    `bf16` runs a CPU's forward passes under bf16 autocast, as a GPU's always are (inference.predict_logits):
    faster on AVX512-BF16 or AMX cores (the CPU recipes train 1.84x faster in it, reports/benchmarks.md), and the
    targets are softened anyway."""
    device = torch.device(device) if device is not None else default_device()
    total = None
    for path, views, weight in members.values():
        trained = load_trained(path, device)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and device.type == "cpu"):
            logits = predict_logits(trained.model, images_u8, crop=trained.crop, tta=views)
        probs = weight * softmax(logits)
        total = probs if total is None else total + probs
    return total / sum(weight for _, _, weight in members.values())


def write_teacher(path: Path, probs: np.ndarray, data_sha256: str, members: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, probs=probs.astype(np.float32), data_sha256=np.array(data_sha256),
                        members=np.array(json.dumps({name: [str(p), v, w] for name, (p, v, w) in members.items()})))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emo_utils.zoo.teacher", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ensemble", type=Path, default=DEFAULT_ENSEMBLE, help="an ensemble report's metrics.json")
    parser.add_argument("--out", type=Path, default=DEFAULT_TEACHER)
    parser.add_argument("--data", help="FER2013 zip, folder or csv (default: the finder)")
    parser.add_argument("--device", help="default: CUDA when present, else CPU")
    parser.add_argument("--bf16", action="store_true", help="a CPU's forward passes under bf16 autocast (a GPU's are)")
    args = parser.parse_args(argv)
    data = fer.load_dataset(args.data)
    members = ensemble_members(args.ensemble)
    probs = teacher_probabilities(members, data.split("train")[0], args.device, bf16=args.bf16)
    path = write_teacher(args.out, probs, data.sha256, members)
    print(f"teacher: {len(members)} members, {len(probs)} training faces -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
