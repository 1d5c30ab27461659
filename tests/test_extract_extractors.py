"""The extractor registry and the extraction core's extractors: holistic weights (state dicts, Lightning
checkpoints, clear errors), the MMA slot with a train_mma-format checkpoint, config key checking."""

import numpy as np
import pytest
import torch
import torchvision

from eri.errors import CheckpointError, ConfigError, WeightsError
from eri.features.base import Extractor, extractor_hash
from eri.features.extractors import EXTRACTORS, build_extractor, extractor_class
from eri.registry import config_keys


def _crops(n=3, size=112, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_registry_names_kinds_and_key_checking():
    for name in ("holistic", "au", "mma", "muse", "openface", "expression", "audio", "audio_ssl"):
        cls = extractor_class(name)
        assert issubclass(cls, Extractor) and cls.kind in ("face", "audio", "file")
    assert [extractor_class(n).dim for n in ("holistic", "mma", "au")] == [512, 26, 34]
    with pytest.raises(ConfigError, match="valid"):
        extractor_class("resnet")
    with pytest.raises(ConfigError, match=r"valid keys: \['name', 'weights', 'random_init'"):
        build_extractor("holistic", {"wieghts": "x"})
    assert "device" in config_keys(extractor_class("holistic"))
    assert set(EXTRACTORS) >= {"holistic", "au", "mma", "muse"}
    h = extractor_hash("a", {"x": 1, "y": 2})
    assert h == extractor_hash("a", {"y": 2, "x": 1}) != extractor_hash("a", {"x": 2, "y": 2})


def test_holistic_loads_torchvision_state_dicts_and_lightning_checkpoints(tmp_path):
    torch.manual_seed(3)
    net = torchvision.models.resnet18()
    sd_path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), sd_path)
    ckpt_path = tmp_path / "run.ckpt"  # a Lightning checkpoint whose module holds the backbone under a prefix
    torch.save(
        {
            "epoch": 3,
            "state_dict": {
                f"model.backbone.net.{k}": v for k, v in net.state_dict().items() if not k.startswith("fc.")
            },
        },
        ckpt_path,
    )
    a = build_extractor("holistic", {"weights": str(sd_path), "input_size": 112})
    b = build_extractor("holistic", {"weights": str(ckpt_path), "input_size": 112})
    r = build_extractor("holistic", {"random_init": True, "input_size": 112})
    x = _crops()
    fa, fb = a(x), b(x)
    np.testing.assert_array_equal(fa, fb)
    # the reference: torchvision's own forward up to the pooled features
    net.fc = torch.nn.Identity()
    ref = (
        net.eval()(
            (
                (torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)
                - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
            )
            / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        )
        .detach()
        .numpy()
    )
    np.testing.assert_allclose(fa, ref, rtol=1e-4, atol=1e-5)
    assert fa.shape == (3, 512) and not np.allclose(fa, r(x))
    assert a.metadata()["random_init"] is False and len(a.metadata()["weights_sha256"]) == 12
    assert r.metadata()["random_init"] is True
    np.testing.assert_array_equal(r(x), build_extractor("holistic", {"random_init": True, "input_size": 112})(x))
    # batching does not change the numbers
    np.testing.assert_allclose(
        build_extractor("holistic", {"weights": str(sd_path), "input_size": 112, "batch_size": 1})(x),
        fa,
        rtol=1e-5,
        atol=1e-6,
    )


def test_holistic_weight_errors_name_the_file(tmp_path):
    with pytest.raises(WeightsError, match="missing.pth not found.*resnet18-f37072fd.pth.*random_init"):
        build_extractor("holistic", {"weights": str(tmp_path / "missing.pth")})
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"nope")
    with pytest.raises(CheckpointError, match="bad.pth is damaged or not a PyTorch file"):
        build_extractor("holistic", {"weights": str(bad)})
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(3)}}, other)
    with pytest.raises(CheckpointError, match="other.pth holds no torchvision resnet18"):
        build_extractor("holistic", {"weights": str(other)})
    with pytest.raises(ValueError, match="uint8 face crops"):
        build_extractor("holistic", {"random_init": True})(np.zeros((2, 112, 112), np.uint8))


def test_mma_slot_runs_a_train_mma_checkpoint(tmp_path):
    mma = pytest.importorskip("eri.models.mma")
    spec = {"backbone": {"name": "small_resnet", "widths": [8, 16], "blocks": 1}, "crop_size": 64, "embed_dim": 16}
    torch.manual_seed(0)
    model = mma.create_mma(spec).eval()
    path = tmp_path / "mma.ckpt"
    torch.save({mma.CHECKPOINT_KEY: spec, "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    ext = build_extractor("mma", {"weights": str(path), "batch_size": 2})
    x = _crops(5)
    out = ext(x)
    assert out.shape == (5, 26)
    assert np.all(np.abs(out[:, :2]) <= 1) and np.allclose(out[:, 2:9].sum(1), 1, atol=1e-5)
    assert np.all((out[:, 9:] >= 0) & (out[:, 9:] <= 1))
    with torch.no_grad():
        np.testing.assert_allclose(out, model.outputs26(model.preprocess(x)).numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(WeightsError, match="tools/train_mma.py"):
        build_extractor("mma", {"weights": str(tmp_path / "none.ckpt")})
