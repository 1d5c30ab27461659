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


def test_mma_e2e_trains_when_a_step_leaves_one_frame_for_batchnorm():
    """A chunk of one frame in training (BatchNorm has no batch statistics of one sample; the H200 run of
    table 000-e2e stopped on it): a remainder of 1 joins the chunk before it, and a lone frame (the only one
    with gradients) is run on BatchNorm's running statistics."""
    enc = _enc(chunk=4, train_frames=0).train()
    x, n = _pixels([5])  # 5 frames with gradients: chunks 4 + 1 -> one of 5
    assert [len(c) for c in enc._chunks(x[0])] == [5] and [len(c) for c in enc._chunks(x[0, :4])] == [4]
    enc(x, n).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.mma.backbone.parameters())
    enc = _enc(train_frames=1).train()
    x, n = _pixels([1, 6])  # videos of 1 and 6 frames, one frame each with gradients: a chunk of 2
    x1, n1 = _pixels([1])
    running = [m.running_mean.clone() for m in enc.mma.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    out = enc.frame_features(x1, n1)  # the lone frame with gradients
    assert enc.grad_frames == 1 and out.requires_grad
    after = [m.running_mean for m in enc.mma.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert all(torch.equal(a, b) for a, b in zip(running, after))  # running statistics used, not updated
    with torch.no_grad():
        enc.mma.eval()
        ref = enc.frame_features(x1, n1)
    assert torch.allclose(out.detach(), ref, atol=1e-6)
    enc.train()(x, n).sum().backward()


def test_mma_e2e_frozen_batchnorm_trains_the_net_on_the_checkpoints_statistics():
    """batchnorm: frozen: in training the RNN reads exactly what it reads at scoring (the statistics regime
    1's features were computed with), none of them moves, and the weights still get gradients. batch
    (PyTorch's training mode) reads other features and moves the statistics; auto is batch from scratch."""
    src = _enc().eval()
    bns = lambda e: [m for m in e.mma.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns(src):  # statistics unlike a batch's, as a checkpoint's of other images are
        m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    x, n = _pixels([12, 7])
    with torch.no_grad():
        want = src.frame_features(x, n)
    enc = _enc(batchnorm="frozen")
    enc.load_state_dict(src.state_dict())
    enc.train()
    running = [m.running_mean.clone() for m in bns(enc)]
    feats = enc.frame_features(x, n)
    torch.testing.assert_close(feats.detach(), want, atol=1e-5, rtol=0)
    feats.sum().backward()
    assert all(torch.equal(a, m.running_mean) for a, m in zip(running, bns(enc)))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.mma.backbone.parameters())
    assert all(m.weight.grad is not None for m in bns(enc))  # the affine weights learn
    batch = _enc(batchnorm="batch")
    batch.load_state_dict(src.state_dict())
    assert (batch.train().frame_features(x, n) - want).abs().max() > 0.1
    assert any(not torch.equal(a, m.running_mean) for a, m in zip(running, bns(batch)))
    assert _enc(batchnorm="auto").frozen_stats is False and enc.frozen_stats is True  # no mma_checkpoint
    with pytest.raises(ValueError, match="batchnorm must be one of batch, frozen, auto"):
        _enc(batchnorm="eval")


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


def test_mma_e2e_benchmark_hours_from_measured_rates(monkeypatch):
    """`--device cuda`'s measured estimate: seconds per Hume video = 1 / the measured rate, scaled by the FLOP
    ratio of Hume's mean length to the benchmark's; at the same length, the plain sum over the splits."""
    from eri.benchmarks import e2e

    kw = dict(size="tiny", batch=2, length=12, frames=12, steps=1, threads=1, side=16, max_gb=1.0)
    train, score = e2e.measure(mode="frames=3", **kw), e2e.measure(mode="score", **kw)
    for r in (train, score):
        r["max_epochs"] = 5
    monkeypatch.setitem(e2e.HUME, "frames", 12)  # Hume's mean length = the benchmark's: ratio 1
    [h] = e2e.measured_hours([train, score])
    epoch = e2e.HUME["train"] / train["train_videos_per_s"] + e2e.HUME["val"] / score["score_videos_per_s"]
    assert h["measured_hours_per_epoch"] == pytest.approx(epoch / 3600, rel=1e-5)
    assert h["measured_hours_5_epochs"] == pytest.approx(
        (5 * epoch + e2e.HUME["test"] / score["score_videos_per_s"]) / 3600, rel=1e-5)
    monkeypatch.setitem(e2e.HUME, "frames", 24)  # twice the frames: more FLOPs, so more hours
    assert e2e.measured_hours([train, score])[0]["measured_hours_per_epoch"] > h["measured_hours_per_epoch"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_mma_e2e_benchmark_on_cuda_without_a_gpu_says_so():
    from eri.benchmarks.e2e import measure
    from eri.errors import InputError

    with pytest.raises(InputError, match="no CUDA GPU"):
        measure(size="tiny", mode="score", batch=1, length=4, frames=4, steps=1, threads=1, side=16, max_gb=1.0,
                device="cuda")


# ------------------------------------------------------------ the MMA loss as an auxiliary term (aux_mma_*)
AUX_LOSS = {"va": 1.0, "expr": 0.5, "au": 1.0, "consistency": 2.0}


@pytest.fixture(scope="module")
def aux_config(tmp_path_factory):
    """A tools/train_mma.py config over a few generated MMA images (AffectNet and EmotioNet layouts, augmented)."""
    from eri.mma.synthetic import write_affectnet, write_emotionet

    root = tmp_path_factory.mktemp("mma_aux")
    write_affectnet(root / "affectnet", (16, 4), seed=0, canvas=48)
    write_emotionet(root / "emotionet", (16, 4), seed=0, canvas=48, crop=32)
    data = {"datasets": [{"reader": "affectnet", "root": str(root / "affectnet")},
                         {"reader": "emotionet", "root": str(root / "emotionet")}], "batch_size": 6, "align_size": 32}
    (root / "mma.yaml").write_text(yaml.safe_dump({"seed": 3, "data": data, "loss": AUX_LOSS}))
    return root / "mma.yaml"


def _aux_task(**aux):
    """An ERITask around the tiny e2e model (``aux``: encoder aux_mma_* keys) and what it logs."""
    from eri.models import create_model
    from eri.training.task import ERITask

    torch.manual_seed(0)
    enc = {**encoder_preset("mma_rnn", "tiny"), "max_len": 40, **aux}
    model = create_model([{"name": "face", "streams": ["crops"], "encoder": enc}], {"name": "concat", "head_hidden": []},
                         {"crops": S * S * 3})
    task = ERITask(model, {"l2": 1.0}, {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "lr_step_epochs": 0, "lr_gamma": 1.0})
    logged = {}
    task.log = lambda name, value, **kw: logged.__setitem__(name, value)
    task.log_dict = lambda values, **kw: logged.update(values)
    return task, task.model.branches["face"].encoder, logged


def _eri_batch():
    x, n = _pixels([12, 7])
    return {"x": {"crops": x}, "lengths": {"crops": n}, "y": torch.rand(2, 7, generator=torch.Generator().manual_seed(1))}


def _backbone_grads(enc):
    return [p.grad.clone() for p in enc.mma.backbone.parameters()]


def test_mma_e2e_aux_term_adds_the_mma_loss_gradient_of_the_drawn_batch(aux_config):
    """One step with aux_mma_weight 0.5: backbone gradient = the ERI loss's + 0.5 x MMALoss's on the MMA batch drawn."""
    from eri.mma.losses import MMALoss

    task, enc, logged = _aux_task(aux_mma_weight=0.5, aux_mma_config=str(aux_config))
    ref, ref_enc, ref_logged = _aux_task()
    torch.manual_seed(1)
    total = task.training_step(_eri_batch(), 0)
    total.backward()
    torch.manual_seed(1)
    eri = ref.training_step(_eri_batch(), 0)
    eri.backward()
    eri_grads = _backbone_grads(ref_enc)
    ref.zero_grad()
    mma_batch = _aux_task(aux_mma_weight=0.5, aux_mma_config=str(aux_config))[1].aux_data.next_batch()  # same seed
    mma_loss, _ = MMALoss(**AUX_LOSS)(ref_enc.mma(ref_enc.mma.normalize(mma_batch["image"])), mma_batch)
    (0.5 * mma_loss).backward()
    assert set(ref_logged) == {"train/loss"} and set(logged) == {"train/loss", "train/aux"}
    torch.testing.assert_close(logged["train/aux"], 0.5 * mma_loss)
    torch.testing.assert_close(total, eri + 0.5 * mma_loss)
    grads = _backbone_grads(enc)
    assert not all(torch.allclose(g, e) for g, e in zip(grads, eri_grads))
    for g, e, m in zip(grads, eri_grads, _backbone_grads(ref_enc)):
        torch.testing.assert_close(g, e + m)


def test_mma_e2e_aux_batches_are_seeded_and_leave_the_global_rng_alone(aux_config):
    """Same config seed: the same augmented batches, across the stream's epoch boundary (32 images, batch 4);
    the draws never touch torch's global RNG; a frozen net draws nothing and adds 0."""
    encs = [_aux_task(aux_mma_weight=1.0, aux_mma_config=str(aux_config), aux_mma_batch_size=4)[1] for _ in range(2)]
    state = torch.get_rng_state()
    runs = [[e.aux_data.next_batch() for _ in range(10)] for e in encs]
    assert torch.equal(torch.get_rng_state(), state)
    assert runs[0][0]["image"].shape == (4, 3, S, S)
    for a, b in zip(*runs):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(runs[0][0]["image"], runs[0][1]["image"])
    frozen = _aux_task(aux_mma_weight=1.0, aux_mma_config=str(aux_config), freeze_backbone_epochs=1)[1].train()
    assert float(frozen.auxiliary_loss()) == 0.0 and frozen.aux_data._batches is None


def test_mma_e2e_aux_off_is_the_plain_model(tmp_path):
    """Weight 0 (the default): no auxiliary_loss, nothing read (the named config need not exist), the same outputs,
    gradients, loss, logged keys and global RNG draws as a model without the options."""
    from eri.training.losses import WeightedLoss

    (a, enc_a, log_a), (b, enc_b, log_b) = _aux_task(), _aux_task(aux_mma_weight=0.0, aux_mma_config=str(tmp_path / "no.yaml"))
    assert not any(hasattr(m, "auxiliary_loss") for t in (a, b) for m in t.model.modules())
    losses, states = [], []
    for task in (a, b):
        torch.manual_seed(1)
        losses.append(task.training_step(_eri_batch(), 0))
        losses[-1].backward()
        states.append(torch.get_rng_state())
    torch.manual_seed(1)
    plain = WeightedLoss({"l2": 1.0})(a.model({"crops": _pixels([12, 7])[0]}, {"crops": torch.tensor([12, 7])}),
                                      _eri_batch()["y"])[0]
    assert torch.equal(losses[0], losses[1]) and torch.equal(losses[0], plain)
    assert torch.equal(states[0], states[1]) and torch.equal(states[0], torch.get_rng_state())
    assert set(log_a) == set(log_b) == {"train/loss"}
    assert all(torch.equal(g, h) for g, h in zip(_backbone_grads(enc_a), _backbone_grads(enc_b)))


def test_mma_e2e_aux_bad_options_fail_in_one_line_naming_them(aux_config, tmp_path):
    from eri.errors import ConfigError
    from eri.models.e2e import weights_follow

    bad_loss = tmp_path / "bad_loss.yaml"
    bad_loss.write_text(aux_config.read_text().replace("consistency:", "consistancy:"))
    cases = [({"aux_mma_weight": -1.0, "aux_mma_batch_size": 0}, r"aux_mma_weight must be .*aux_mma_batch_size must be"),
             ({"aux_mma_weight": 1.0}, r"aux_mma_config .* is required when aux_mma_weight > 0"),
             ({"aux_mma_weight": 1.0, "aux_mma_config": "configs/mma/none.yaml"}, r"aux_mma_config: configs/mma/none.yaml not found"),
             ({"aux_mma_weight": 1.0, "aux_mma_config": str(bad_loss)}, rf"aux_mma_config {bad_loss}: .*consistancy")]
    for aux, match in cases:
        with pytest.raises(ConfigError, match=match) as e:
            _aux_task(**aux)
        assert "\n" not in str(e.value)
    with weights_follow():  # a model file: the term is training only, its config is never read
        assert not hasattr(_aux_task(aux_mma_weight=1.0, aux_mma_config="configs/mma/none.yaml")[1], "auxiliary_loss")
