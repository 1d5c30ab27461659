"""MMA readers on small files in each dataset's real format (with its "no label" markers), the shared
sample, the mixing sampler, and the generator's layouts."""

import warnings

import numpy as np
import pytest
import torch

from eri.mma.data import DataFormatError, FaceDataset, MixSampler, read_affectnet, read_affwild2, read_emotionet
from eri.models.mma import AU_IDS, EXPRESSIONS
from eri.mma.synthetic import _write_jpeg, landmarks68, render_face, sample_labels, write_affwild2

E = EXPRESSIONS.index


def _face(tmp, rel, seed=0, canvas=64):
    rng = np.random.default_rng(seed)
    lab = sample_labels(rng, 1)
    img, lm5 = render_face(rng, lab["au_intensity"][0], lab["va"][0], canvas)
    _write_jpeg(tmp / rel, img)
    return lm5


def test_affectnet_reader_codes_markers_and_alignment(tmp_path):
    lm = [landmarks68(_face(tmp_path, f"Manually_Annotated_Images/1/{i}.jpg", i)) for i in range(6)]
    enc = [";".join(f"{v:.3f}" for v in p.reshape(-1)) for p in lm]
    rows = [  # code, valence, arousal
        (1, 0.5, 0.2),  # Happy -> Happiness
        (6, -0.4, 0.6),  # Anger
        (7, 0.1, 0.1),  # contempt: VA only
        (8, -2, -2),  # none, no VA: nothing but the consistency term
        (10, -2, -2),  # no face: skipped
        (0, 0.0, 0.0),  # Neutral
    ]
    lines = ["subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"]
    lines += [f"1/{i}.jpg,0,0,10,10,{enc[i]},{c},{v},{a}" for i, (c, v, a) in enumerate(rows)]
    lines.append(f"1/missing.jpg,0,0,10,10,{enc[0]},3,0.1,0.1")  # file not there: skipped
    (tmp_path / "training.csv").write_text("\n".join(lines) + "\n")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        rec = read_affectnet(tmp_path, "train")
    assert any("no face" in str(x.message) for x in w) and any("missing.jpg" in str(x.message) for x in w)
    assert len(rec) == 5
    assert rec.expr.tolist() == [E("Happiness"), E("Anger"), -1, -1, E("Neutral")]
    assert rec.va_mask.tolist() == [True, True, True, False, True]
    np.testing.assert_allclose(rec.va[0], [0.5, 0.2])
    assert not rec.au_mask.any()
    # 5 points from the 68: eyes are the means of 36-41 / 42-47, nose 30, mouth corners 48 / 54
    np.testing.assert_allclose(rec.landmarks[0, 0], lm[0][36:42].mean(0), atol=1e-3)
    np.testing.assert_allclose(rec.landmarks[0, 4], lm[0][54], atol=1e-3)
    sample = FaceDataset(rec, crop_size=32, align_size=64)[0]
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.uint8
    assert sample["expr"].item() == E("Happiness") and bool(sample["valid"])
    (tmp_path / "validation.csv").write_text(lines[0] + "\n1/0.jpg,0,0,1,1,1;2,11,0.1,0.1\n")
    with pytest.raises(DataFormatError, match="0-10"):
        read_affectnet(tmp_path, "val")


def test_affwild2_reader_markers(tmp_path):
    write_affwild2(tmp_path, videos=(("train", 3, 10),), canvas=64, crop=48)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = read_affwild2(tmp_path, "train")
    # 3 videos x 10 frames, frame 4 of each has no image (no face)
    assert len(rec) == 27
    paths = [str(p) for p in rec.paths]
    assert not any(p.endswith("00004.jpg") for p in paths)
    by_video = {
        v: [i for i, p in enumerate(paths) if f"/{v}/" in p] for v in ("train_000", "train_001_left", "train_002")
    }
    # train_000: VA + EXPR, no AU file; train_001_left: VA + AU; train_002: EXPR + AU
    v0, v1, v2 = (np.array(by_video[k]) for k in ("train_000", "train_001_left", "train_002"))
    assert not rec.au_mask[v0].any() and (rec.expr[v1] == -1).all() and not rec.va_mask[v2].any()
    # line 6 (frame 00006) VA -5, line 7 expression -1, line 8 expression 7 (Other), line 9 AU -1
    f = lambda v, k: v[k - 1] if k < 4 else v[k - 2]  # noqa: E731  frame k (1-based) once frame 4 is dropped
    assert not rec.va_mask[f(v0, 6)] and rec.va_mask[f(v0, 5)]
    assert rec.expr[f(v0, 7)] == -1 and rec.expr[f(v0, 8)] == -1 and rec.expr[f(v0, 5)] >= 0
    assert not rec.au_mask[f(v1, 9)].any()
    # the 12 Aff-Wild2 AUs fill their slots; 5, 9, 11, 17, 20 are never labelled
    labelled = {AU_IDS[k] for k in np.flatnonzero(rec.au_mask.any(0))}
    assert labelled == {1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26}
    # expression codes are in Aff-Wild2's order, which is ours
    txt = (
        (tmp_path / "Third_ABAW_Annotations/EXPR_Classification_Challenge/Train_Set/train_000.txt").read_text().split()
    )
    assert rec.expr[f(v0, 1)] == int(txt[1])


def test_emotionet_reader_999_and_bad_values(tmp_path):
    for i in range(3):
        _face(tmp_path, f"images/{i}.jpg", i)
    (tmp_path / "train.csv").write_text(
        "URL,AU 1,AU 2,AU 9,AU 14\nimages/0.jpg,1,0,999,1\nimages/1.jpg,0,999,1,0\n"
        "images/2.jpg,1,1,1,1\nimages/gone.jpg,1,1,1,1\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = read_emotionet(tmp_path, "train")
    assert len(rec) == 3
    k1, k2, k9 = AU_IDS.index(1), AU_IDS.index(2), AU_IDS.index(9)
    assert rec.au_mask[:, [k1, k2, k9]].tolist() == [[True, True, False], [True, False, True], [True, True, True]]
    assert rec.au[0, k1] == 1 and rec.au[1, k9] == 1
    assert rec.au_mask.sum(1).tolist() == [2, 2, 3]  # AU 14 is not one of the 17
    assert not rec.va_mask.any() and (rec.expr == -1).all()
    (tmp_path / "val.csv").write_text("URL,AU 1\nimages/0.jpg,2\n")
    with pytest.raises(DataFormatError, match="999"):
        read_emotionet(tmp_path, "val")


def test_bad_image_is_masked_and_reported(tmp_path):
    for i in range(2):
        _face(tmp_path, f"images/{i}.jpg", i)
    (tmp_path / "images/1.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "train.csv").write_text("image,AU1\nimages/0.jpg,1\nimages/1.jpg,1\n")
    ds = FaceDataset(read_emotionet(tmp_path, "train"), crop_size=32)
    with pytest.warns(UserWarning, match="1.jpg"):
        s = ds[1]
    assert not s["valid"] and not s["au_mask"].any() and s["image"].shape == (3, 32, 32)
    assert ds[0]["valid"] and len(ds.bad) == 1


def test_mix_sampler_weights_and_determinism():
    s = MixSampler([100, 50, 10], [1.0, 1.0, 2.0], num_samples=8000, seed=3)
    idx = np.array(list(s))
    share = [np.mean(idx < 100), np.mean((idx >= 100) & (idx < 150)), np.mean(idx >= 150)]
    np.testing.assert_allclose(share, [0.25, 0.25, 0.5], atol=0.03)
    assert idx.max() < 160 and len(idx) == len(s)
    assert list(s) == list(MixSampler([100, 50, 10], [1.0, 1.0, 2.0], 8000, seed=3))  # same epoch, same draws
    s.set_epoch(1)
    assert list(s) != idx.tolist()
    with pytest.raises(ValueError, match="weight"):
        MixSampler([10, 0], [0.0, 1.0], 5)
