"""benchmarks/pipeline_frames.py places each face where its truth says, once, and counts matches as it should."""
import importlib.util

import numpy as np

from emo_utils.data import REPO_ROOT

spec = importlib.util.spec_from_file_location("pipeline_frames", REPO_ROOT / "benchmarks" / "pipeline_frames.py")
pipeline_frames = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pipeline_frames)


def test_faces_are_pasted_where_the_truth_says_each_once():
    levels = np.arange(20, 240, 22, dtype=np.uint8)  # each face one flat grey level, told apart by it
    faces_u8 = np.repeat(levels[:, None, None], 48, axis=1).repeat(48, axis=2)
    frames, boxes, which = pipeline_frames.make_frames(faces_u8, empty=3, max_rotation=15, seed=1)
    assert sorted(np.concatenate(which).tolist()) == list(range(len(levels)))
    assert [len(b) for b in boxes[-3:]] == [0, 0, 0] and all(len(b) for b in boxes[:-3])
    for frame, frame_boxes, indices in zip(frames, boxes, which):
        assert frame.shape == (480, 640, 3)
        for (x, y, w, h), index in zip(frame_boxes, indices):
            assert w == h and 40 <= w <= 200 and x + w <= 640 and y + h <= 480
            centre = frame[y + w // 3:y + 2 * w // 3, x + w // 3:x + 2 * w // 3].astype(float)
            assert abs(centre.mean() - levels[index]) < 3, (index, centre.mean())


def test_a_detection_counts_for_one_face_and_the_rest_are_false():
    truth = np.array([(0, 0, 100, 100), (300, 0, 100, 100)])
    found = np.array([(5, 5, 100, 100), (10, 0, 90, 90), (600, 400, 30, 30)])
    matched, false = pipeline_frames.match(truth, found)
    assert matched.tolist() == [0, -1] and false == 2
