"""An EMA's batch norms can take statistics measured for the averaged weights instead of the raw model's."""
import torch

from emo_utils.core.augment import to_float
from emo_utils.core.models import build_model
from emo_utils.core.config import TrainConfig
from emo_utils.core.checkpoint import load_checkpoint
from emo_utils.core.step import recompute_bn_statistics
from emo_utils.core.train import train
from synthetic import make_learnable_data


def test_recomputed_statistics_are_the_mean_and_variance_of_the_first_batch_norms_inputs():
    torch.manual_seed(0)
    conv, norm = torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)
    model = torch.nn.Sequential(conv, norm, torch.nn.ReLU())
    norm.running_mean.fill_(5.0)  # stale statistics, as update_ema's copy of the raw model's would be
    norm.running_var.fill_(9.0)
    images = torch.randint(0, 256, (300, 12, 12), dtype=torch.uint8)
    recompute_bn_statistics(model, images, crop=0, seed=0, batch_size=300, limit=300)  # one batch: exact stats
    with torch.no_grad():
        features = conv(to_float(images))
    torch.testing.assert_close(norm.running_mean, features.mean((0, 2, 3)))
    torch.testing.assert_close(norm.running_var, features.var((0, 2, 3), unbiased=True))
    assert norm.momentum == 0.1 and model.training  # momentum and mode are restored


def test_an_ema_run_with_recomputed_statistics_keeps_its_own_statistics(tmp_path):
    data = make_learnable_data(train_per_class=20, test_per_class=4)
    config = TrainConfig(model="mini_xception", model_kwargs={"widths": (8, 16)}, batch_size=32, epochs=2,
                         ema_decay=0.9, ema_recompute_bn=True)
    train(config, data, tmp_path, progress=False)
    final = load_checkpoint(tmp_path / "final.pt")
    means = {k: v for k, v in final["model"].items() if k.endswith("running_mean")}
    assert means and any(not torch.equal(v, final["raw_model"][k]) for k, v in means.items())
    # The evaluated (best-on-val) weights carry exactly the statistics that recomputing them gives.
    best = load_checkpoint(tmp_path / "best.pt")["model"]
    model = build_model("mini_xception", 7, widths=(8, 16)).to(memory_format=torch.channels_last)
    model.load_state_dict(best)
    for k in means:
        model.state_dict()[k].add_(1.0)  # spoil them, so only the recomputation can restore them
    recompute_bn_statistics(model, torch.from_numpy(data.split("train")[0]), 0, config.seed)
    for k in means:
        torch.testing.assert_close(model.state_dict()[k], best[k])
