"""Decoding with PyAV: codecs and containers, variable frame rate, rotation, audio, broken files."""

import av
import numpy as np
import pytest

from eri.features.video import SAMPLE_RATE, DecodeError, decode, write_video

CODECS = [("libx264", "mp4"), ("libx265", "mov"), ("libvpx-vp9", "webm"), ("libx264", "mov"), ("libvpx-vp9", "mkv")]


def _frames(n=12, h=64, w=96):
    fr = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        fr[i] = 10 * i  # frame identity survives lossy coding as its grey level
    fr[:, :8, :8] = 255  # a marker in the top-left corner
    return fr


def _tone(seconds, rate, hz=440.0, channels=2):
    t = np.arange(int(seconds * rate)) / rate
    return np.repeat((0.5 * np.sin(2 * np.pi * hz * t))[None], channels, 0)


def _grey(frames):
    return frames[:, 32, 48, 0].astype(int)


@pytest.mark.parametrize("codec,ext", CODECS)
def test_codecs_containers_frames_and_16k_mono_audio(tmp_path, codec, ext):
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path = tmp_path / f"v.{ext}"
    rate, audio_codec = (48000, "libopus") if ext in ("webm", "mkv") else (44100, "aac")
    write_video(path, _frames(), fps=12, codec=codec, audio=_tone(1.0, rate), audio_rate=rate, audio_codec=audio_codec)
    v = decode(path)
    assert v.frames.shape == (12, 64, 96, 3) and v.frames.dtype == np.uint8
    assert np.abs(_grey(v.frames) - 10 * np.arange(12)).max() <= 2
    np.testing.assert_allclose(v.timestamps, np.arange(12) / 12, atol=1e-3)
    assert v.fps == pytest.approx(12)
    assert v.audio.dtype == np.float32 and v.audio.ndim == 1
    assert abs(len(v.audio) - SAMPLE_RATE) < 0.08 * SAMPLE_RATE  # 1 s (+ codec priming/padding)
    spec = np.abs(np.fft.rfft(v.audio[2000:14000]))
    assert np.fft.rfftfreq(12000, 1 / SAMPLE_RATE)[spec.argmax()] == pytest.approx(440, abs=3)


def test_variable_frame_rate_keeps_times_and_resamples_to_a_grid(tmp_path):
    times = np.array([0, 0.03, 0.1, 0.2, 0.21, 0.22, 0.5, 0.9, 1.0, 1.3])
    path = tmp_path / "vfr.mp4"
    write_video(path, _frames(10), fps=25, times=times)
    v = decode(path)
    np.testing.assert_allclose(v.timestamps, times, atol=1e-6)
    np.testing.assert_array_less(np.abs(_grey(v.frames) - 10 * np.arange(10)), 3)
    g = decode(path, fps=10)
    np.testing.assert_allclose(g.timestamps, np.arange(14) / 10, atol=1e-9)
    # at each tick, the frame on screen: 0.3 s still shows the frame of 0.22 s, 0.6-0.8 s the one of 0.5 s
    shown = [0, 2, 3, 5, 5, 6, 6, 6, 6, 7, 8, 8, 8, 9]
    np.testing.assert_array_less(np.abs(_grey(g.frames) - 10 * np.array(shown)), 3)


@pytest.mark.parametrize("rotation,corner", [(90, "bottom-left"), (-90, "top-right"), (180, "bottom-right")])
def test_rotation_metadata_is_applied(tmp_path, rotation, corner):
    path = tmp_path / "rot.mp4"
    write_video(path, _frames(3), fps=25, rotation=rotation)
    v = decode(path, audio=False)
    h, w = v.frames.shape[1:3]
    assert (h, w) == ((96, 64) if rotation % 180 else (64, 96))
    ys, xs = np.nonzero(v.frames[0, :, :, 0] > 200)
    want = {"bottom-left": (h - 4, 4), "top-right": (4, w - 4), "bottom-right": (h - 4, w - 4)}[corner]
    assert abs(ys.mean() - want[0]) < 2 and abs(xs.mean() - want[1]) < 2


def test_max_side_downscales(tmp_path):
    path = tmp_path / "v.mp4"
    write_video(path, _frames(2), fps=25)
    assert decode(path, max_side=48, audio=False).frames.shape == (2, 32, 48, 3)


def test_no_audio_track_and_audio_only_file(tmp_path):
    path = tmp_path / "silent.mp4"
    write_video(path, _frames(4), fps=25)
    assert decode(path).audio is None
    wav = tmp_path / "only_audio.m4a"
    with av.open(str(wav), "w", format="mp4") as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        for i in range(0, 16000, 1024):
            f = av.AudioFrame.from_ndarray(
                _tone(1.0, 16000, channels=1)[:, i : i + 1024].astype(np.float32), format="fltp", layout="mono"
            )
            f.sample_rate, f.pts = 16000, i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    v = decode(wav)
    assert v.n_frames == 0 and len(v.audio) > 15000


def test_broken_files_raise_an_error_naming_the_file(tmp_path):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(DecodeError, match="garbage.mp4"):
        decode(bad)
    with pytest.raises(DecodeError, match="not found"):
        decode(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(DecodeError, match="empty.mp4"):
        decode(empty)
    # a truncated file keeps what could be decoded, or fails with a named error; it never hangs or crashes
    good = tmp_path / "good.mp4"
    write_video(good, _frames(12), fps=12)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    try:
        assert decode(cut, audio=False).n_frames < 12
    except DecodeError as e:
        assert "cut.mp4" in str(e)
