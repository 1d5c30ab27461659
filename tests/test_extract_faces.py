"""Faces: 5-point alignment against scikit-image, face choice, interpolation, and MTCNN on real media."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from eri.align import align_face, align_faces, similarity_matrices, template
from eri.features.faces import FaceDetector, FaceTrack, choose_face, interpolate_track
from eri.features.video import decode

MEDIA = Path(importlib.util.find_spec("feat").origin).parent / "tests" / "data"
LM = np.array([[300, 150], [350, 155], [325, 185], [305, 215], [345, 218]], float)


def _image(seed=0, h=360, w=640):
    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.random((h, w, 3)) * 255, (3, 3, 0)).astype(np.uint8)


def test_align_face_matches_skimage_similarity_warp():
    from skimage.transform import SimilarityTransform, warp

    img = _image()
    lm = LM + np.random.default_rng(1).normal(0, 2, (5, 2))
    tf = SimilarityTransform.from_estimate(lm, template(224))
    np.testing.assert_allclose(similarity_matrices(lm, template(224))[0], tf.params[:2], atol=1e-9)
    ref = warp(img, tf.inverse, output_shape=(224, 224), order=1, preserve_range=True)
    out = align_face(img, lm, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(float) - ref).max() <= 0.51  # rounding only


def test_landmarks_land_on_the_template():
    # bright dots at the landmarks of a rotated, scaled face end up at the template's points
    img = np.zeros((360, 640, 3), np.uint8)
    ang = np.deg2rad(20)
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    lm = (template(112) - 56) @ rot.T * 1.7 + [320, 180]
    for x, y in lm:
        img[int(round(y)) - 1 : int(round(y)) + 2, int(round(x)) - 1 : int(round(x)) + 2] = 255
    out = align_face(img, lm, 112)[..., 0].astype(float)
    for tx, ty in template(112):
        patch = out[int(ty) - 4 : int(ty) + 5, int(tx) - 4 : int(tx) + 5]
        yy, xx = np.mgrid[int(ty) - 4 : int(ty) + 5, int(tx) - 4 : int(tx) + 5]
        cy, cx = (patch * yy).sum() / patch.sum(), (patch * xx).sum() / patch.sum()
        assert abs(cx - tx) < 1.0 and abs(cy - ty) < 1.0


def test_batched_alignment_equals_one_at_a_time_and_sizes():
    imgs = np.stack([_image(s) for s in range(3)])
    lms = np.stack([LM + s for s in range(3)])
    batch = align_faces(imgs, lms, 224)
    for i in range(3):  # the same up to float rounding of the sampling grid
        assert np.abs(batch[i].astype(int) - align_face(imgs[i], lms[i], 224)).max() <= 1
    assert align_faces(imgs, lms, 112).shape == (3, 112, 112, 3)
    assert align_faces(imgs[:0], lms[:0], 224).shape == (0, 224, 224, 3)
    with pytest.raises(ValueError, match="landmarks must be"):
        align_face(imgs[0], LM[:4])


def test_alignment_undoes_an_image_rotation():
    img = _image(2)
    h = img.shape[0]
    rotated = np.ascontiguousarray(np.rot90(img))  # counter-clockwise: (x, y) -> (y, W - 1 - x)
    lm_rot = np.stack([LM[:, 1], img.shape[1] - 1 - LM[:, 0]], 1)
    a, b = align_face(img, LM, 224).astype(int), align_face(rotated, lm_rot, 224).astype(int)
    assert np.abs(a - b).max() <= 1 and h == 360


def test_choose_face_prefers_large_and_central_and_drops_weak():
    hw = (360, 640)
    centre = [270, 130, 370, 230]
    corner_big = [0, 0, 110, 110]
    assert choose_face(np.array([corner_big, centre], float), [0.99, 0.99], None, hw) == 1
    big_central = [220, 80, 420, 280]
    assert choose_face(np.array([centre, big_central], float), [0.99, 0.99], None, hw) == 1
    assert choose_face(np.array([centre, corner_big], float), [0.5, 0.99], None, hw) == 1
    assert choose_face(np.array([centre], float), [0.5], None, hw) is None
    assert choose_face(None, None, None, hw) is None


def test_interpolation_is_linear_between_faces_and_never_bridges_a_gap():
    t = FaceTrack.empty(9)
    for i, x in [(0, 0.0), (4, 40.0), (8, np.nan)]:
        t.detected[i] = True
        if np.isfinite(x):
            t.boxes[i] = [x, 0, x + 10, 10]
            t.landmarks[i] = x
            t.valid[i] = True
            t.probs[i] = 0.99
    interpolate_track(t)
    np.testing.assert_allclose(t.boxes[:5, 0], [0, 10, 20, 30, 40])
    np.testing.assert_allclose(t.landmarks[2], 20.0)
    assert t.valid.tolist() == [True] * 5 + [False] * 4


def test_mtcnn_finds_the_face_and_no_face_where_there_is_none():
    det = FaceDetector(detect_scale=0.5, batch_size=8)
    v = decode(MEDIA / "single_face.mp4", audio=False)
    tr = det(v.frames[:6])
    assert tr.valid.all() and tr.detected.all()
    lm = tr.landmarks
    assert (lm[:, 0, 0] < lm[:, 1, 0]).all()  # left eye left of right eye
    assert (lm[:, :2, 1].max(1) < lm[:, 3:, 1].min(1)).all()  # eyes above mouth
    inside = (lm[..., 0] >= tr.boxes[:, None, 0]) & (lm[..., 0] <= tr.boxes[:, None, 2])
    assert inside.all()
    crops = align_faces(v.frames[:6], tr.landmarks, 112)
    assert crops.shape == (6, 112, 112, 3) and crops.std() > 10
    none = det(decode(MEDIA / "no_face.mp4", audio=False).frames[:4])
    assert not none.valid.any() and np.isnan(none.boxes).all()


def test_every_kth_detection_follows_the_face_to_the_frame():
    v = decode(MEDIA / "face_noface.mov", audio=False)
    frames = v.frames[58:86]  # the face leaves at frame 72 of the file
    full = FaceDetector(detect_scale=0.5)(frames)
    sparse = FaceDetector(detect_scale=0.5, every_k=5)(frames)
    assert full.valid.any() and not full.valid.all()
    np.testing.assert_array_equal(sparse.valid, full.valid)
    assert sparse.detected.sum() < len(frames)
    both = full.valid & sparse.valid & ~sparse.detected
    err = np.linalg.norm(sparse.landmarks[both] - full.landmarks[both], axis=-1)
    box = full.boxes[both]
    assert err.mean() < 0.1 * np.sqrt((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])).mean()
