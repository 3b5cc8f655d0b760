"""What each torchrun process of test_distributed.py runs: the shared config on the shared synthetic data.

The net has neither batch norm nor dropout: with them a rank's statistics and masks depend on its share of
the batch (torch's SyncBatchNorm has no CPU kernel), and the test is about the loop, not about those layers.
"""
from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from emo_utils.core import distributed  # noqa: E402
from emo_utils.core.models import REGISTRY, register  # noqa: E402
from emo_utils.core.config import TrainConfig
from emo_utils.core.train import train
from synthetic import make_learnable_data  # noqa: E402

TRAINING_BATCHES: list[int] = []  # the batch sizes this process's net trained on


class DDPTestNet(nn.Module):
    def __init__(self, num_classes=7):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
                                  nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(16, num_classes))

    def forward(self, x):
        if self.training:
            TRAINING_BATCHES.append(x.shape[0])
        return self.body(x)


def ddp_test_net(num_classes=7):
    return DDPTestNet(num_classes)


if "ddp_test_net" not in REGISTRY:
    register(ddp_test_net)

# Every trick whose randomness could differ between ranks is on: crops, flips, erasing, mixup, EMA, one-cycle.
CONFIG = TrainConfig(model="ddp_test_net", optimizer="sgd", nesterov=True, lr=0.05, weight_decay=5e-4,
                     scheduler="onecycle", batch_size=32, epochs=3, label_smoothing=0.1, ema_decay=0.9,
                     augment=dict(crop=44, erase=0.5, mixup=0.2))


def data():
    return make_learnable_data(train_per_class=20, test_per_class=4)


if __name__ == "__main__":
    torch.set_num_threads(1)
    run_dir, report = Path(sys.argv[1]), Path(sys.argv[2])
    train(CONFIG, data(), run_dir, device="cpu", progress=False)
    (report / f"batches_rank{os.environ['RANK']}.json").write_text(json.dumps(sorted(set(TRAINING_BATCHES))))
    # Interpreter teardown with gloo's threads alive aborted rank 0 on a loaded machine: end as the training
    # command line ends a rank. The marker below is written only if teardown runs after all (the test checks).
    atexit.register(lambda: (report / f"teardown_rank{os.environ['RANK']}").touch())
    distributed.end_rank(0)
