"""One small trained Mini-Xception per test session, shared by test_predict.py and test_export.py."""
from __future__ import annotations

from pathlib import Path

from conftest import FER_CLASSES
from emo_utils.core.config import TrainConfig
from emo_utils.core.train import train
from synthetic import make_learnable_data


def tiny_model(tmp_path_factory) -> Path:
    """final.pt of a Mini-Xception trained for a few epochs on synthetic faces named like FER2013's classes and
    evaluated on a 44-pixel centre crop, so the crop must travel through every path (torch, ONNX, CLI)."""
    run_dir = tmp_path_factory.getbasetemp() / "tiny_mini_xception"
    if not (run_dir / "final.pt").exists():
        data = make_learnable_data(train_per_class=30)
        data.class_names = list(FER_CLASSES)
        config = TrainConfig(model="mini_xception", model_kwargs={"widths": (8, 16)}, batch_size=32, epochs=6,
                             optimizer="adam", lr=1e-2, scheduler="none", augment=dict(crop=44))
        train(config, data, run_dir, progress=False)
    return run_dir / "final.pt"
