"""The end-to-end model of paper 000 (issue 21 item 3, `eri.models.e2e`): MMA CNN per frame -> masked RNN,
trained jointly from face crops (`eri.data.crops_dataset`). Every test name holds ``mma_e2e``."""

import numpy as np
import pytest
import torch
import yaml

from conftest import faces_preset
from eri.features.crops import CROPS_EXTRACTION
from eri.models import ENCODERS
from eri.models.presets import encoder_preset

S = 16  # crop side of the unit tests


def _enc(**kw):
    torch.manual_seed(0)
    spec = {**encoder_preset("mma_rnn", "tiny"), "max_len": 40, **kw}
    spec.pop("name")
    return ENCODERS["mma_rnn"](S * S * 3, **spec)


def _pixels(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (len(lengths), max(lengths), S * S * 3), generator=g).float()
    for i, n in enumerate(lengths):
        x[i, n:] = 0
    return x, torch.tensor(lengths)


def test_mma_e2e_gradients_reach_the_backbone_and_not_while_frozen():
    enc = _enc(freeze_backbone_epochs=1).train()
    x, n = _pixels([12, 7])
    enc(x, n).sum().backward()
    assert all(p.grad is None for p in enc.mma.parameters()) and enc.rnn.rnn.weight_ih_l0.grad is not None
    enc.set_epoch(1)
    enc.zero_grad()
    enc(x, n).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.mma.backbone.parameters())
    group = enc.param_group(1e-3)
    assert group["lr"] == pytest.approx(1e-3 * enc.backbone_lr_scale) and len(group["params"]) == len(list(enc.mma.parameters()))


def test_mma_e2e_frozen_path_feeds_the_rnn_what_regime_1_extracts():
    """The RNN input is the 26-d `outputs26` of the same MMA weights on the same crops (the mma stream)."""
    enc = _enc().eval()
    x, n = _pixels([9, 5])
    with torch.no_grad():
        feats = enc.frame_features(x, n)
        crops = x[0, :9].reshape(9, S, S, 3).to(torch.uint8)
        want = enc.mma.outputs26(enc.mma.preprocess(crops))
    torch.testing.assert_close(feats[0, :9], want, atol=1e-5, rtol=0)
    assert not feats[1, 5:].any()


def test_mma_e2e_padding_invariance():
    enc = _enc().eval()
    x, n = _pixels([20, 6])
    with torch.no_grad():
        torch.testing.assert_close(enc(x[1:, :6], n[1:]), enc(x, n)[1:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("T", [20, 40, 200])
def test_mma_e2e_memory_is_bounded_as_the_length_grows(T):
    """train_frames: the frames that pass the CNN with gradients (activation memory) do not grow with T;
    frames beyond max_len never reach it."""
    enc = _enc(train_frames=4).train()
    seen = []
    enc.mma.backbone.register_forward_hook(lambda m, i, o: seen.append((len(i[0]), torch.is_grad_enabled())))
    x, n = _pixels([T, T // 2])
    enc(x, n).sum().backward()
    assert enc.grad_frames == 8 and sum(k for k, g in seen if g) == 8
    assert sum(k for k, _ in seen) == min(T, 40) + min(T // 2, 40)


def test_mma_e2e_checkpointed_frames_give_the_same_gradients():
    x, n = _pixels([10, 4])
    grads = []
    for ckpt in (False, True):
        enc = _enc(checkpoint_frames=ckpt, chunk=3).eval()  # eval: BatchNorm statistics stay put
        enc(x, n).sum().backward()
        grads.append(enc.mma.backbone.body[0].weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_mma_e2e_auto_extraction_is_configs_extract_crops():
    with open("configs/extract/crops.yaml") as f:
        assert yaml.safe_load(f) == CROPS_EXTRACTION


@pytest.fixture(scope="module")
def faces_run(faces_root, tmp_path_factory):
    """The acceptance command on tiny-faces shrunk to 14 short videos (conftest.FACES), tiny preset, 1 epoch."""
    from eri.commands.train import main as train_main

    tmp = tmp_path_factory.mktemp("e2e")
    (tmp / "D").symlink_to(faces_root, target_is_directory=True)
    with faces_preset():
        assert train_main(["--config", "configs/mma_mrnnet_e2e.yaml", f"data.root={tmp / 'D'}", "data.synthetic=tiny-faces",
                           "trainer.max_epochs=1", "model.preset=tiny", "data.min_valid_frames=10",
                           f"out={tmp / 'run'}", "trainer.progress_bar=false"]) in (0, None)
    return tmp


def test_mma_e2e_the_tiny_acceptance_command_trains_and_scores(faces_run):
    import json

    metrics = json.loads((faces_run / "run" / "metrics.json").read_text())
    assert np.isfinite(metrics["val"]["mean_pcc"])

    assert (faces_run / "run" / "model.ckpt").is_file() and metrics["checkpoint"].startswith("checkpoints/")


def test_mma_e2e_predicts_a_rendered_video_from_the_model_file(faces_run, tmp_path):
    """The model file alone: crops are extracted from the raw video with the settings it records, then the
    joint model predicts (no MMA checkpoint or regime-1 run needed)."""
    import eri

    video = sorted((faces_run / "D" / "videos").glob("*.mp4"))[-1]
    pred = eri.load_model(faces_run / "run" / "model.ckpt").predict([video], out=tmp_path / "p", progress=False)
    row = pred.iloc[0]
    assert row["File_ID"] == video.stem and pred.shape[0] == 1
    values = row[["Adoration", "Amusement", "Anxiety", "Disgust", "Empathic-Pain", "Fear", "Surprise"]].to_numpy(float)
    assert np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()
    assert (tmp_path / "p" / "store" / "features").is_dir()


def test_mma_e2e_benchmark_counts_gradient_frames_and_their_flops():
    """`eri benchmark e2e`'s rows (tiny, in process): ``frames=K`` gives K frames per video gradients, each
    costing the probe's (with grad - without) FLOPs more than a frame without; a mode over --max-gb is skipped."""
    from eri.benchmarks.e2e import hume_flops, measure

    kw = dict(size="tiny", batch=2, length=12, frames=12, steps=1, threads=1, side=16, max_gb=1.0)
    rows = {k: measure(mode=f"frames={k}", **kw) for k in (3, 6)}
    assert [rows[k]["grad_frames_per_video"] for k in (3, 6)] == [3, 6]
    g, h = rows[3]["gflops_per_grad_frame"], rows[3]["gflops_per_frame_nograd"]
    assert g > 2 * h  # a backward pass costs about two forward passes
    assert rows[6]["gflops_per_video"] - rows[3]["gflops_per_video"] == pytest.approx(3 * (g - h), rel=1e-3)
    # the H200 estimate at another length: frames beyond K cost a forward pass only
    assert hume_flops(rows[3], n=20) - hume_flops(rows[3], n=12) == pytest.approx(8 * h * 1e9, rel=1e-6)
    skipped = measure(mode="all", **{**kw, "max_gb": 1e-6})
    assert skipped["note"].startswith("skipped") and "train_videos_per_s" not in skipped
