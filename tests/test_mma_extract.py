"""A train_mma checkpoint is what the `mma` and `holistic` extractors load, with no conversion step:
their outputs on a batch of aligned crops equal the trained model's outputs on the same crops."""

import numpy as np
import torch

from eri.features.extractors import build_extractor
from eri.models.mma import load_mma
from eri.mma.task import MMATask


def _checkpoint(path, model_spec, seed=0):
    """The checkpoint Lightning writes for an MMATask: its state dict plus what ``on_save_checkpoint`` adds."""
    torch.manual_seed(seed)
    task = MMATask(model_spec, {"va": 1.0}, {"name": "adam", "lr": 1e-3, "lr_step_epochs": 0, "lr_gamma": 0.5})
    for m in task.model.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    ckpt = {"state_dict": task.state_dict(), "epoch": 3}
    task.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return task.model.eval()


def test_mma_extractor_equals_trained_model(tmp_path):
    spec = {"backbone": {"name": "small_resnet", "widths": [8, 16]}, "crop_size": 32, "embed_dim": 16}
    model = _checkpoint(tmp_path / "mma.ckpt", spec)
    crops = np.random.default_rng(0).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    ext = build_extractor("mma", {"weights": str(tmp_path / "mma.ckpt")})
    got = ext(crops)
    with torch.no_grad():
        want = model.outputs26(model.preprocess(crops)).numpy()
    assert got.shape == (5, 26)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(
        load_mma(tmp_path / "mma.ckpt").outputs26(model.preprocess(crops)).detach().numpy(), want, atol=1e-6
    )


def test_holistic_extractor_reads_the_resnet18_of_a_train_mma_checkpoint(tmp_path):
    spec = {"backbone": {"name": "resnet18"}, "crop_size": 224, "embed_dim": 32}
    model = _checkpoint(tmp_path / "holistic.ckpt", spec, seed=1)
    crops = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    ext = build_extractor("holistic", {"weights": str(tmp_path / "holistic.ckpt")})
    got = ext(crops)
    with torch.no_grad():
        want = model.backbone_features(model.preprocess(crops)).numpy()
    assert got.shape == (2, 512)
    np.testing.assert_allclose(got, want, atol=1e-5)
