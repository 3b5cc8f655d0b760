"""Where a result came from: the commit (clean or not), the library versions, the seed, the data's checksum,
the device and the wall time. Every metrics.json, the zoo's records and the benchmarks carry it.
"""
from __future__ import annotations

import datetime as dt
import platform
import subprocess
from pathlib import Path

import numpy as np

from .core.data import REPO_ROOT


def git_commit(root: Path = REPO_ROOT) -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        # reports/ and the front page's results table (README.md) are what `make reports` rewrites as it goes:
        # only a change elsewhere makes the code uncommitted (with README.md counted, every notebook after the
        # first of a run said "uncommitted").
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!reports",
                                ":!README.md"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("+uncommitted" if dirty else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def library_versions() -> dict:
    import sklearn
    import torch
    import torchvision
    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__), "numpy": np.__version__, "scikit-learn": sklearn.__version__}


def provenance(seed: int, data_sha256: str, meta: dict, budget: str) -> dict:
    """Where a result came from. `meta` is TrainResult.meta (device and wall time of the training run)."""
    versions = library_versions()
    return {"commit": git_commit(), "seed": seed, "data_sha256": data_sha256, "device": meta.get("device", ""),
            "torch": versions["torch"], "versions": versions, "wall_seconds": round(meta.get("wall_seconds", 0.0), 1),
            "epochs_run": meta.get("epochs_run", 0), "epochs_asked": meta.get("epochs_asked", 0),
            "best_epoch": meta.get("best_epoch", 0), "stop_reason": meta.get("stop_reason", ""), "budget": budget,
            "reused_weights": bool(meta.get("reused", False)),
            **({"dedup_removed": meta["dedup_removed"]} if meta.get("dedup_removed") else {}),
            "evaluated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
