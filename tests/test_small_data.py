"""A dataset of a few dozen faces, as a user's first try of "Add a dataset" is: a class too small to hold one face
out for validation is a one-line data error before training, and the training accuracy counts the faces trained on."""
import pytest

from emo_utils.core.config import TrainConfig
from emo_utils.core.readers import DataError
from emo_utils.core.train import train
from synthetic import FAST, make_learnable_data


def test_a_class_too_small_for_a_val_face_is_a_data_error_naming_it_before_training(tmp_path):
    data = make_learnable_data(num_classes=3, train_per_class=4, test_per_class=2)  # 4 a class: 10% rounds to 0
    with pytest.raises(DataError) as error:
        train(TrainConfig(**FAST, epochs=1), data, tmp_path / "run", progress=False)
    message = str(error.value)
    assert "\n" not in message and "'class0' (4 faces)" in message and "at least 5 a class" in message
    assert not (tmp_path / "run").exists()  # nothing started


def test_train_accuracy_is_over_the_faces_of_a_batch_smaller_than_the_batch_size(tmp_path):
    data = make_learnable_data(num_classes=3, train_per_class=10, test_per_class=2)  # 27 training faces, val 3
    assert len(data.split("train")[1]) == 27
    result = train(TrainConfig(**{**FAST, "batch_size": 64}, epochs=2), data, tmp_path / "run", progress=False)
    for row in result.history:  # right answers over 27 faces, not over 64: a multiple of 1/27, and up to 1
        assert 0 <= row["train_acc"] <= 1 and abs(row["train_acc"] * 27 - round(row["train_acc"] * 27)) < 1e-6
    assert any(row["train_acc"] > 0 for row in result.history)  # some right answers, so the multiple says something
