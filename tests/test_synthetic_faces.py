"""Synthetic face videos with ERI labels (issue 21): the feature generator's events drawn as faces, a cue
no MMA head names, the real layout. Every test name holds ``mma_e2e`` (the issue counts them)."""

import json

import numpy as np
import pytest

from eri.constants import EMOTIONS
from eri.data.synthetic import PRESETS, ensure_synthetic, generate
from eri.data.synthetic.faces import frame_truth, render_video, resolve_face_preset
from eri.data.synthetic.generator import _mixing, _plan, _subject, _video
from eri.errors import ConfigError

SMALL = {"n_train": 4, "n_val": 2, "n_test": 2, "duration_min": 4.0, "duration_max": 5.0}  # ~5 s to render


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """tiny-faces shrunk to 8 short videos (the preset itself, through the training entry point)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRESETS, "tiny-faces", {**PRESETS["tiny-faces"], **SMALL})
        root = ensure_synthetic(tmp_path_factory.mktemp("faces") / "tiny-faces", "tiny-faces", features=False)
        knobs, face = resolve_face_preset("tiny-faces")
        yield root, knobs, face, _plan(knobs, 0), _mixing(knobs, 0)


def test_mma_e2e_face_videos_are_deterministic_and_resumable(faces, tmp_path):
    root, *_ = faces
    before = {p.name: p.read_bytes() for p in (root / "videos").iterdir()}
    summary = (root / "synthetic.json").read_bytes()
    (root / "videos" / "00003.mp4").unlink()
    (root / "synthetic.json").unlink()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRESETS, "tiny-faces", {**PRESETS["tiny-faces"], **SMALL})
        s = generate(root, "tiny-faces", progress=False)
        assert s["_generated_now"] == 1  # the others were kept
        assert {p.name: p.read_bytes() for p in (root / "videos").iterdir()} == before
        assert (root / "synthetic.json").read_bytes() == summary
        with pytest.raises(ConfigError, match="extract them first"):  # training's call: no features yet
            ensure_synthetic(root, "tiny-faces")
    with pytest.raises(ConfigError, match="generated for preset tiny-faces"):  # another preset's folder
        generate(root, "tiny", progress=False)
    (tmp_path / "mine.csv").write_text("a\n")
    with pytest.raises(ConfigError, match="did not generate"):  # a user's folder is never written into
        generate(tmp_path, "tiny-faces", progress=False, **SMALL)
    stats = json.loads(summary)
    assert stats["ceiling"]["train"] is not None and stats["hidden_cues"] == {"tears": ["Empathic-Pain"],
                                                                               "gaze": ["Adoration"]}


def test_mma_e2e_face_videos_rendered_by_workers_are_the_same_files(faces, tmp_path):
    """make_synthetic --workers N: the same videos and summary as one process, whichever process renders."""
    root, *_ = faces
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRESETS, "tiny-faces", {**PRESETS["tiny-faces"], **SMALL})
        s = generate(tmp_path / "w", "tiny-faces", progress=False, workers=2)
    assert s["_generated_now"] == 8
    assert ({p.name: p.read_bytes() for p in (tmp_path / "w" / "videos").iterdir()}
            == {p.name: p.read_bytes() for p in (root / "videos").iterdir()})
    assert (tmp_path / "w" / "synthetic.json").read_bytes() == (root / "synthetic.json").read_bytes()


def test_mma_e2e_face_videos_follow_the_event_timeline(faces):
    _, knobs, face, plan, mix = faces
    rows = plan.to_dict("records")
    row = max(rows, key=lambda r: sum(r["y_" + e] for e in EMOTIONS) * (not r["low_valid"]))
    truth = frame_truth(row, knobs, face, mix, 0)
    # the same events as the video's feature streams: the mma stream's non-neutral mass rises with the face's
    mma_stream = _video(row, knobs, mix, _subject(knobs, 0, row["subject"]), 0)["mma"][0].astype(float)
    ok = truth.valid
    assert np.corrcoef(mma_stream[ok, 2], truth.mma[ok, 2])[0, 1] > 0.5  # column 2: Neutral (the stream is noisy)
    # the pixels follow the face: drawn against the same video at rest (same pose, lighting and noise)
    rest = frame_truth(row, knobs, face, mix, 0)
    rest.au[:] = truth.au.min(axis=0)  # the subject's resting AUs
    rest.va[:], rest.cues[:] = 0.0, 0.0
    moved = np.abs(render_video(row, truth, face, 0).astype(float) - render_video(row, rest, face, 0))
    moved = moved.mean(axis=(1, 2, 3))
    shown = np.abs(truth.au - rest.au).sum(axis=1) + np.abs(truth.va).sum(axis=1) + truth.cues.sum(axis=1)
    assert np.corrcoef(moved[ok], shown[ok])[0, 1] > 0.8
    assert (moved[~ok] == 0).all()  # no face, nothing to move


def test_mma_e2e_the_hidden_cue_is_not_in_the_mma_labels_but_in_the_pixels(faces):
    _, knobs, face, plan, mix = faces
    row = next(r for r in plan.to_dict("records") if r["y_Empathic-Pain"] > 0.3 and not r["low_valid"])
    truth = frame_truth(row, knobs, face, mix, 0)
    blind = frame_truth(row, knobs, {**face, "cue_visibility": {c: [0.0] * 7 for c in face["cue_visibility"]}}, mix, 0)
    np.testing.assert_array_equal(truth.mma, blind.mma)  # what an MMA model is trained to output: unchanged
    cued = truth.cues.max(axis=1)
    assert (cued > 0.2).any()
    differ = (render_video(row, truth, face, 0) != render_video(row, blind, face, 0)).any(axis=(1, 2, 3))
    assert not differ[(cued == 0) | ~truth.valid].any()  # ... but the pixels change where the cues show
    assert differ[(cued > 0.05) & truth.valid].all()

    # video level, small-faces' plan: a ridge probe on even a noiseless MMA's pooled outputs misses what the cues add
    knobs, face = resolve_face_preset("small-faces")
    plan, mix = _plan(knobs, 0), _mixing(knobs, 0)
    pooled = []
    for r in plan.to_dict("records"):
        t = frame_truth(r, knobs, face, mix, 0)
        m, c = (t.mma[t.valid], t.cues[t.valid]) if t.valid.any() else (t.mma, t.cues)
        pooled.append(np.r_[m.max(0), m.mean(0), c.max(0), c.mean(0)])
    x = np.asarray(pooled)
    y = plan[["y_" + e for e in EMOTIONS]].to_numpy()
    train = (plan["split"] == "train").to_numpy()

    def probe(cols):
        z = (x[:, cols] - x[train][:, cols].mean(0)) / (x[train][:, cols].std(0) + 1e-9)
        z = np.c_[z, np.ones(len(z))]
        w = np.linalg.solve(z[train].T @ z[train] + 0.01 * train.sum() * np.eye(z.shape[1]), z[train].T @ y[train])
        p = z @ w
        return np.array([np.corrcoef(p[~train, j], y[~train, j])[0, 1] for j in range(len(EMOTIONS))])

    mma_only, with_cues = probe(slice(0, 52)), probe(slice(0, 56))
    ado, emp = EMOTIONS.index("Adoration"), EMOTIONS.index("Empathic-Pain")
    assert mma_only[ado] < 0.7 < 0.85 < with_cues[ado]
    assert with_cues[emp] > mma_only[emp] + 0.05
    assert np.abs(np.delete(with_cues - mma_only, [ado, emp])).max() < 0.03  # the others: nothing hidden


def test_mma_e2e_face_world_writes_the_real_layout(faces):
    from eri.data.labels import read_manifest
    from eri.features.faces import FaceDetector
    from eri.features.listing import list_videos
    from eri.features.video import decode

    root, knobs, face, plan, mix = faces
    manifest = read_manifest(root)
    assert sorted(manifest["File_ID"]) == sorted(plan["File_ID"]) and set(manifest["split"]) == {"train", "val", "test"}
    assert manifest[list(EMOTIONS)].max(axis=1).eq(1.0).all()
    videos, problems = list_videos(root)
    assert not problems and videos["path"].notna().all()
    row = next(r for r in plan.to_dict("records") if not r["low_valid"])
    truth = frame_truth(row, knobs, face, mix, 0)
    v = decode(root / "videos" / f"{row['File_ID']}.mp4")
    assert v.n_frames == row["n_frames"] and v.fps == pytest.approx(10.0) and v.audio is None
    assert np.abs(v.frames.astype(float) - render_video(row, truth, face, 0)).mean() < 3  # near lossless
    found = FaceDetector()(v.frames).valid
    assert found[truth.valid].mean() > 0.8 and not found[~truth.valid].any()
