"""MMA end to end on generated images: it learns (with and without the consistency term), its
checkpoint loads with `load_mma`, config errors are clear."""

import warnings

import numpy as np
import pytest
import torch

from eri.config import ConfigError
from eri.mma.config import load_mma_config
from eri.mma.data import read_emotionet
from eri.models.mma import load_mma
from eri.mma.synthetic import write_affectnet, write_emotionet
from eri.mma.train import train_mma


@pytest.fixture(scope="module")
def learn_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mma_learn")
    write_affectnet(root / "affectnet", (300, 90), seed=0, canvas=64)
    write_emotionet(root / "emotionet", (250, 80), seed=0, canvas=64, crop=32)
    return root


def _cfg(root, out, *extra):
    return load_mma_config(
        "configs/mma/demo.yaml",
        [
            "data.synthetic=null",
            f"data.datasets=[{{reader: affectnet, root: {root}/affectnet}}, {{reader: emotionet, root: {root}/emotionet, weight: 1.5}}]",
            "data.align_size=32",
            "model.crop_size=32",
            "model.backbone={name: small_resnet, widths: [16, 32, 32]}",
            "model.embed_dim=64",
            "data.batch_size=32",
            "data.samples_per_epoch=800",
            "optim.lr=0.003",
            "trainer.max_epochs=5",
            "trainer.progress_bar=false",
            "data.augment={flip: true, scale_min: 1.0, rotation: 0, color_jitter: 0}",
            f"out={out}",
            *extra,
        ],
    )


@pytest.mark.parametrize("consistency", [1.0, 0.0])
def test_learns_generated_faces_with_and_without_consistency(learn_root, tmp_path, consistency):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = train_mma(_cfg(learn_root, tmp_path / "run", f"loss.consistency={consistency}"))
    a, e = m["val"]["affectnet"], m["val"]["emotionet"]
    # chance: expression accuracy 1/7 = 0.14, macro-F1 about as low, CCC 0
    assert a["expr_acc"] > 0.35 and a["expr_f1"] > 0.3, a
    assert a["va_ccc_valence"] > 0.4 and a["va_ccc_arousal"] > 0.3, a
    # AU chance: predicting every AU present scores F1 = 2p / (1 + p) per AU (p its base rate)
    rec = read_emotionet(learn_root / "emotionet", "val")
    cols = rec.au_mask.any(0)
    p = np.array([rec.au[rec.au_mask[:, k], k].mean() for k in np.flatnonzero(cols)])
    assert e["au_f1"] > (2 * p / (1 + p)).mean() + 0.08, (e, p)
    # the best checkpoint is what extraction loads; it reproduces the validated model
    model = load_mma(tmp_path / "run" / m["checkpoint"])
    assert not model.training and model.crop_size == 32
    ckpt = torch.load(tmp_path / "run" / m["checkpoint"], map_location="cpu", weights_only=True)
    w = ckpt["state_dict"]["model.expr_head.weight"]
    assert torch.equal(model.expr_head.weight, w)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="valid keys here.*batch_size"):
        load_mma_config("configs/mma/demo.yaml", ["data.bach_size=3"])
    with pytest.raises(ConfigError, match="valid keys.*reader"):
        load_mma_config("configs/mma/demo.yaml", ["data.datasets=[{readr: affectnet, root: x}]"])
    with pytest.raises(ConfigError, match="unknown task"):
        load_mma_config("configs/mma/demo.yaml", ["data.datasets=[{reader: affectnet, root: x, tasks: [au, pain]}]"])
    for name in ("demo", "resnet18", "affectnet_holistic"):
        assert load_mma_config(f"configs/mma/{name}.yaml").data.datasets


def test_load_mma_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_mma"):
        load_mma(tmp_path / "none.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a train_mma checkpoint"):
        load_mma(tmp_path / "other.ckpt")
