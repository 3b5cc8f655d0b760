"""Distillation: an ensemble's probabilities on the training faces, written once, checked against the data they
were computed on, softened, and mixed into the training targets."""
import json

import numpy as np
import pytest
import torch

from emo_utils.core.augment import AugmentPolicy, to_float
from emo_utils.core.config import TrainConfig
from emo_utils.core.checkpoint import load_trained
from emo_utils.zoo.teacher import ensemble_members, teacher_probabilities, write_teacher
from emo_utils.core.distill import read_teacher, soften
from emo_utils.core.inference import predict_logits, softmax
from emo_utils.core.losses import make_loss
from emo_utils.core.run import Run, RunState, train_step
from emo_utils.core.train import train
from conftest import make_fer_zip
from synthetic import make_learnable_data


def test_soften_is_the_softmax_of_the_logits_over_the_temperature():
    logits = np.array([[2.0, 1.0, -1.0], [0.0, 3.0, 0.5]])
    probs = softmax(logits)
    np.testing.assert_allclose(soften(probs, 1.0), probs, rtol=1e-6)
    np.testing.assert_allclose(soften(probs, 2.0), softmax(logits / 2), rtol=1e-6)
    assert (soften(probs, 4.0).max(1) < soften(probs, 2.0).max(1)).all()  # hotter: flatter, the same ranking


def test_read_teacher_refuses_outputs_computed_on_other_data_and_names_the_fix(tmp_path):
    probs = softmax(np.random.default_rng(0).normal(size=(10, 7)))
    path = write_teacher(tmp_path / "teacher.npz", probs, "a" * 64, {})
    np.testing.assert_allclose(read_teacher(path, "a" * 64, 10), probs, rtol=1e-5)
    with pytest.raises(ValueError, match="teacher.npz holds the teacher's outputs on 10 faces.*python -m emo_utils.zoo.teacher"):
        read_teacher(path, "b" * 64, 10)
    with pytest.raises(ValueError, match="not on these 12 training faces"):
        read_teacher(path, "a" * 64, 12)
    with pytest.raises(FileNotFoundError, match="missing.npz: no teacher probabilities. Write them with"):
        read_teacher(tmp_path / "missing.npz", "a" * 64, 10)


def test_the_step_learns_from_the_labels_mixed_with_the_teacher():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    images = torch.randint(0, 256, (5, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 1, 0])
    teacher = torch.softmax(torch.randn(5, 3), 1)
    config = TrainConfig(distill_weight=0.3, channels_last=False)
    loss_fn = make_loss("ce", label_smoothing=0.1)
    with torch.no_grad():
        logits = model(to_float(images))
    targets = 0.7 * torch.nn.functional.one_hot(labels, 3).float() + 0.3 * teacher
    expected = loss_fn(logits, targets)
    run = Run(config=config, device=torch.device("cpu"), shard=slice(None), compile_mode="off", num_classes=3,
              images=images, labels=labels, val_images=None, val_labels=None, policy=AugmentPolicy(flip=False),
              flip_bits=None, teacher=teacher, teacher_weight=None, model=model, net=model,
              optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=loss_fn, plateau=None, ema_model=None,
              state=RunState(planned_epochs=1), rng=torch.Generator().manual_seed(0))
    loss, _ = train_step(run, torch.arange(5), 1)
    torch.testing.assert_close(loss, expected)
    assert not torch.allclose(loss, loss_fn(logits, labels))  # the teacher changed what it learns from


def test_an_ensembles_outputs_on_the_training_faces_teach_a_new_run(tmp_path):
    data = make_learnable_data(train_per_class=10, test_per_class=3)
    tiny = dict(model="vgg_gap", model_kwargs={"widths": (8, 16), "convs": 1}, batch_size=16, epochs=1,
                augment=dict(crop=44))
    reports = tmp_path / "reports"
    for name, seed in (("a", 0), ("b", 1)):
        (reports / name).mkdir(parents=True)
        train(TrainConfig(**tiny, seed=seed), data, tmp_path / "runs" / name, progress=False,
              model_path=reports / name / "model.pt")
    metrics = reports / "ensemble" / "metrics.json"
    metrics.parent.mkdir()
    metrics.write_text(json.dumps({"provenance": {"members": {"a": 0.75, "b": 0.25},
                                                  "member_views": {"a": "flip", "b": "center"}}}))
    members = ensemble_members(metrics, reports)
    faces = data.split("train")[0]
    probs = teacher_probabilities(members, faces, "cpu")
    expected = sum(w * softmax(predict_logits(load_trained(reports / n / "model.pt").model, faces, crop=44, tta=v))
                   for n, v, w in (("a", "flip", 0.75), ("b", "center", 0.25)))
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    in_bf16 = teacher_probabilities(members, faces, "cpu", bf16=True)  # a CPU's faster teacher
    assert not np.array_equal(in_bf16, probs) and np.abs(in_bf16 - probs).max() < 0.05
    teacher = write_teacher(tmp_path / "teacher.npz", probs, data.sha256, members)

    student = train(TrainConfig(**tiny, distill_targets=str(teacher)), data, tmp_path / "runs" / "student",
                    progress=False)
    assert student.meta["epochs_run"] == 1 and student.config.distill_targets == str(teacher)
    with pytest.raises(ValueError, match="refit=True trains on val too, and a teacher's probabilities cover"):
        train(TrainConfig(**tiny, distill_targets=str(teacher), refit=True), data, tmp_path / "runs" / "r",
              progress=False)
    metrics.write_text(json.dumps({"provenance": {"members": {"a": 0.5, "gone": 0.5},
                                                  "member_views": {"a": "flip", "gone": "flip"}}}))
    with pytest.raises(FileNotFoundError, match=r"names members without weights under reports/: \['gone'\]"):
        ensemble_members(metrics, reports)


def test_the_training_command_names_a_teacher_it_cannot_use_before_anything_is_written(tmp_path, capsys):
    """A distilled config with a missing teacher, or one written for other data, is one line naming the fix, and no
    model or run folder; a --trial (another subset of faces than the teacher's) trains without the teacher and says so."""
    from emo_utils.core.data import load_dataset
    from emo_utils.zoo import train as train_cli
    archive = make_fer_zip(tmp_path / "data", n_train=12, n_public=2, n_private=2)
    data = load_dataset(archive)
    faces = int(data.split_mask("train").sum())
    teachers = {"missing": (tmp_path / "missing.npz", "no teacher probabilities. Write them with `python -m "
                                                      "emo_utils.zoo.teacher"),
                "other data": (write_teacher(tmp_path / "other.npz", np.full((faces, 7), 1 / 7), "b" * 64, {}),
                               "write it again for this data with `python -m emo_utils.zoo.teacher`")}
    tiny = dict(model="vgg_gap", model_kwargs={"widths": [8, 16], "convs": 1}, batch_size=16, epochs=1,
                augment=dict(crop=44), channels_last=False)

    def run(teacher, *extra):
        config = tmp_path / "distilled.json"
        config.write_text(json.dumps({**tiny, "distill_targets": str(teacher)}))
        return train_cli.main(["--config", str(config), "--data", str(archive), "--model-path",
                               str(tmp_path / "out" / "model.pt"), "--run-dir", str(tmp_path / "run"), *extra])

    for case, (teacher, fix) in teachers.items():
        with pytest.raises(SystemExit) as stop:
            run(teacher)
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert stop.value.code == 2 and err.startswith("python -m emo_utils.zoo.train: error: ") and fix in err, case
        assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists(), case
    whole = write_teacher(tmp_path / "whole.npz", np.full((faces, 7), 1 / 7), data.sha256, {})
    assert run(whole, "--trial") == 0
    assert "trial: distillation left out" in capsys.readouterr().out
    assert load_trained(tmp_path / "out" / "model.pt").config.distill_targets == ""
