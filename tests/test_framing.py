"""framing.py: the similarity transform it computes from where a face was pasted and the aligner's warp is the
one that turns the original 48x48 face into the crop the pipeline cut (issue 38, part 1's measurement)."""
import cv2
import numpy as np
import pytest

from emo_utils.predict import detectors, faces, framing, scenes
from test_video import drawn_face


def pasted_face(x, y, side, angle, seed=0):
    """A grey 640x480 frame with the drawn face pasted as the frames benchmark pastes one, and the face."""
    face = drawn_face(0.5)
    canvas = np.full((480, 640, 3), 120.0)
    scenes.paste(canvas, face, x, y, side, angle)
    return cv2.cvtColor(canvas.astype(np.uint8), cv2.COLOR_RGB2GRAY), face


def centre_difference(a, b) -> float:
    return float(np.abs(a[12:36, 12:36].astype(float) - b[12:36, 12:36]).mean())


@pytest.mark.parametrize("landmarks", ["dlib", "mtcnn"])
def test_the_measured_transform_turns_the_original_face_into_the_aligned_crop(landmarks):
    aligner = faces.make_aligner(landmarks)
    x, y, side, angle = 200, 120, 150, 12.0
    gray, face = pasted_face(x, y, side, angle)
    box = np.array([(x, y, side, side)])
    crop = aligner.crop(gray, box)[0]
    (warp, zoom), = aligner.matrices(gray, box)
    face_to_crop = framing.aligned_crop_matrix(warp, zoom) @ framing.paste_matrix(x, y, side, angle)
    predicted = cv2.warpAffine(face, face_to_crop[:2], (48, 48), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
    assert centre_difference(predicted, crop) < 8
    t = framing.similarity(face_to_crop)
    assert abs(t["angle"]) < 5  # the aligner undid the 12 degree turn
    # a transform off by a few pixels or degrees predicts the crop worse
    shifted = np.array([[1, 0, 3], [0, 1, 0], [0, 0, 1]]) @ face_to_crop
    worse = cv2.warpAffine(face, shifted[:2], (48, 48), borderMode=cv2.BORDER_REPLICATE)
    assert centre_difference(worse, crop) > centre_difference(predicted, crop) + 2


def test_a_square_crop_of_the_pasted_box_is_the_face_itself():
    x, y, side = 100, 50, 96
    gray, face = pasted_face(x, y, side, 0.0)
    to_crop = framing.square_crop_matrix(x, y, x + side) @ framing.paste_matrix(x, y, side, 0.0)
    t = framing.similarity(to_crop)
    assert t == pytest.approx(dict(scale=1.0, dx=0.0, dy=0.0, angle=0.0), abs=1e-9)
    turned = framing.similarity(framing.square_crop_matrix(x, y, x + side) @ framing.paste_matrix(x, y, side, 10))
    assert turned["angle"] == pytest.approx(10) and turned["scale"] == pytest.approx(1)
    crop = faces.crop_faces(gray, [(x, y, side, side)], margin=0)[0]
    shifted = cv2.warpAffine(face, np.float64([[1, 0, 1], [0, 1, 1]]), (48, 48), borderMode=cv2.BORDER_REPLICATE)
    assert centre_difference(crop, face) < 10 < centre_difference(crop, shifted)  # resampling blurs edges a little


def test_percentiles_and_recall_bins():
    transforms = [dict(scale=s, dx=0.0, dy=1.0, angle=-s) for s in np.linspace(0.9, 1.1, 101)]
    p = framing.percentiles(transforms)
    assert p["scale"][2] == pytest.approx(1.0) and p["scale"][0] == pytest.approx(0.91)
    assert p["dy"] == [1.0] * 5 and framing.percentiles([])["angle"] is None
    matched = np.array([0, -1, 2, -1, 5])
    sizes = np.array([40, 59, 60, 150, 200])
    assert framing.binned_recall(matched, sizes, (40, 60, 100, 200)) == {"40-60": 0.5, "60-100": 1.0, "100-200": 0.5}
    assert framing.binned_recall(matched, sizes, (0, 10, 20))["0-10"] is None


def test_notebook_09s_photo_framing_is_the_photo_defaults_row_of_the_published_framing_table():
    """The framed ablation trains on how the photo default frames faces: its percentiles must be the bold (photo)
    rows of reports/benchmarks.md's framing table, so a new frames benchmark that moves them shows here."""
    from emo_utils.core.augment import FRAMING_PERCENTILES
    from emo_utils.core.data import REPO_ROOT
    from emo_utils.recipes import notebook_parameters
    quantities = {"scale": "scale", "x offset (px)": "dx", "y offset (px)": "dy", "rotation (°)": "angle"}
    published = {}
    for line in (REPO_ROOT / "reports" / "benchmarks.md").read_text().splitlines():
        cells = [cell.strip().strip("*") for cell in line.strip("|").split("|")]
        if len(cells) == 2 + len(FRAMING_PERCENTILES) and "(photo" in cells[0] and cells[1] in quantities:
            published[quantities[cells[1]]] = [float(value) for value in cells[2:]]
    framing = notebook_parameters(REPO_ROOT / "notebooks" / "09_train_vgg_gap.ipynb")["photo_framing"]
    assert set(published) == set(quantities.values())
    assert framing == published
