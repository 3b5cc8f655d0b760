"""A report's model.pt stays under the repository's file limit: over 16 MiB of weights, all of them go float16."""
import torch

from emo_utils.core.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, publish_model, save_atomically

MiB = 2**20


def final_checkpoint(path, **weight_sets):
    save_atomically({"format": CHECKPOINT_FORMAT, "config": {}, "meta": {}, **weight_sets}, path)
    return path


def weights(mib):  # one float32 tensor of `mib` MiB, plus an integer buffer that must stay as it is
    return {"w": torch.randn(mib * MiB // 4), "num_batches_tracked": torch.tensor(7)}


def test_weights_under_the_limit_are_copied_in_float32(tmp_path):
    final = final_checkpoint(tmp_path / "final.pt", model=weights(10))
    assert not publish_model(final, tmp_path / "model.pt")
    published = load_checkpoint(tmp_path / "model.pt")
    assert torch.equal(published["model"]["w"], load_checkpoint(final)["model"]["w"])
    assert "weights_dtype" not in published["meta"]


def test_the_raw_weights_of_an_ema_run_count_and_are_halved_too(tmp_path):
    # Each set alone is under 16 MiB; together they pass it, so the file would exceed the limit in float32.
    final = final_checkpoint(tmp_path / "final.pt", model=weights(10), raw_model=weights(10))
    assert publish_model(final, tmp_path / "model.pt")
    published, original = load_checkpoint(tmp_path / "model.pt"), load_checkpoint(final)
    for key in ("model", "raw_model"):
        assert published[key]["w"].dtype == torch.float16
        assert torch.equal(published[key]["w"], original[key]["w"].half())
        assert torch.equal(published[key]["num_batches_tracked"], torch.tensor(7))
    assert "float16" in published["meta"]["weights_dtype"]
    assert (tmp_path / "model.pt").stat().st_size < 16 * MiB
