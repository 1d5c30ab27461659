"""Ablation table ``000-e2e`` (issue 21 item 4): the comparison paper 000 implies, measured on face videos.

Paper 000 trains the MMA network alone, extracts its 26 outputs per frame and trains the masked RNN on
them (regime 1), then trains the two jointly "in an end-to-end manner, after having initialised each
subnetwork" (regime 2). The rows (`eri.search.ablate` adds them as a table; base configs/mma_mrnnet.yaml):

- regime 1 (the reference): the frozen MMA net's outputs as the ``mma`` stream -> masked RNN;
- regime 2: encoder ``mma_rnn`` (`eri.models.e2e`) on the face crops, its MMA net initialised from the same
  checkpoint and its RNN from the same seed's regime-1 run, trained jointly;
- end to end from scratch: the same model, no initialisation;
- backbone frozen: regime 2 with the MMA net frozen in every epoch. Its RNN reads what regime 1's reads
  (tested), so it checks the joint path, and against regime 2 it isolates what training the CNN adds
  (both get the same epochs on top of regime 1).
- regime 2 with ``batchnorm: frozen``: the MMA net trains, but its BatchNorm layers keep the checkpoint's
  running statistics (`eri.models.e2e`: with the chunks' own statistics, as PyTorch trains, the 26 outputs
  move far from the ones regime 1's RNN learnt on, and the initialisation is lost in the first epoch).

The end-to-end rows take regime 1's RNN sizes, so its weights fit. Everything they share is made once per
table run by `prepare` (cached, deterministic for a seed; a second call reuses it):

1. the MMA checkpoint: tools/train_mma.py on the generated MMA images (`eri.mma.synthetic`) with the
   preset's ``mma_rnn`` architecture, in ``<runs>/000-e2e/mma-<config hash>/``; ``--mma-checkpoint``
   uses yours instead (required by ``--preset real``);
2. the face videos and their crops, exactly as training makes them (`eri.features.crops.extract_face_crops`);
3. regime 1's stream, ``mma_<weights hash>``: the checkpoint's 26 outputs on those same stored crops (the
   ``mma`` extractor run on them), so regime 1 and the end-to-end rows see the same pixels and differ
   only in what is trained. Named by the weights, so the run cache never serves a regime-1 run of
   another checkpoint. (configs/extract/mma.yaml runs it on 224-px aligned crops instead: nearly the
   same numbers when the net's input is 64 px, as here.)
4. per seed, regime 1 through the run cache: the reference row's own runs, whose model.ckpt the
   initialised rows start from.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path

import numpy as np

from eri.errors import ConfigError

NAME = "000-e2e"
TITLE = "Paper 000: frozen MMA features + masked RNN (regime 1) against end-to-end training from face crops"
CLAIM = ("regime 2 (end to end, each subnetwork initialised) is the paper's final model, implying it beats "
         "regime 1; our copy reports no number for the comparison")
CROPS = "crops"
MMA_CKPT, MMA_NET, MMA_STREAM, REGIME1 = "<mma checkpoint>", "<mma architecture>", "<mma stream>", "<regime-1 run>"
RNN_KEYS = ("hidden", "fc_dim", "rnn", "rnn_layers", "max_len")  # taken from regime 1's encoder
EVERY_EPOCH = 1_000_000  # freeze_backbone_epochs of the frozen row: frozen whatever trainer.max_epochs is


def _e2e(**encoder) -> dict:
    """An overlay of configs/mma_mrnnet.yaml into configs/mma_mrnnet_e2e.yaml's model, with regime 1's RNN."""
    enc = {"name": "mma_rnn", "features": "outputs26", "mask": True, "routing": True, "long_videos": "subsample",
           "backbone_lr_scale": 0.1, "mma": MMA_NET, **{k: f"<regime-1 {k}>" for k in RNN_KEYS}, **encoder}
    return {"model.branches": [{"name": "face", "streams": [CROPS], "encoder": enc}], "data.standardize": False,
            "data.eval_batch_size": 16}


REFERENCE = "regime 1: frozen MMA features + masked RNN"
INIT = {"mma_checkpoint": MMA_CKPT, "rnn_from_run": REGIME1}
ROWS = [
    (REFERENCE, {"model.branches.0.streams": [MMA_STREAM]}),
    ("regime 2: end to end from regime 1's initialisation (batchnorm: batch)", _e2e(**INIT)),
    ("end to end from scratch (no initialisation)", _e2e()),
    ("backbone frozen (regime 2's path, MMA net not trained)", _e2e(**INIT, freeze_backbone_epochs=EVERY_EPOCH)),
    ("regime 2 with the checkpoint's BatchNorm statistics kept (batchnorm: frozen)", _e2e(**INIT, batchnorm="frozen")),
]
# preset -> the table's data (the *-faces videos; `real`: --data-root, holding the crops stream)
DATA = {
    "tiny": {"data.root": "data/tiny-faces", "data.synthetic": "tiny-faces", "data.batch_size": 8,
             "data.min_valid_frames": 10, "trainer.max_epochs": 1},
    "hume-small": {"data.root": "data/small-faces", "data.synthetic": "small-faces", "trainer.max_epochs": 5},
    "real": {"data.synthetic": None},
}
MMA_CONFIG = "configs/mma/demo.yaml"
MMA_TRAINING = {"tiny": ["data.synthetic=tiny", "trainer.max_epochs=1"], "hume-small": []}  # its overrides


def prepare(table, preset: str, seeds: int, runs, extra: list, data_root, inputs: dict, progress=print):
    """Make what the rows share (module docstring) -> ``fill(overlay, seed)``, the overlay with its
    placeholders replaced. ConfigError (one line) when ``real`` lacks the checkpoint or the crops."""
    from eri.models.mma import read_mma_checkpoint
    from eri.search.ablate import resolve
    from eri.training.cache import cached_train

    ckpt = inputs.get("mma_checkpoint")
    if preset not in MMA_TRAINING and not ckpt:
        raise ConfigError(f"table {NAME} --preset {preset} needs your MMA checkpoint: --mma-checkpoint PATH "
                          "(a tools/train_mma.py checkpoint)")
    if ckpt and not Path(ckpt).is_file():
        raise ConfigError(f"table {NAME}: MMA checkpoint {ckpt} not found (--mma-checkpoint)")
    progress(f"{NAME}: preparing the MMA checkpoint, the face crops, regime 1's stream and runs")
    ckpt = Path(ckpt) if ckpt else train_mma_cached(preset, Path(runs) / NAME)
    net = json.loads(json.dumps(read_mma_checkpoint(ckpt)[0]))
    subs = {MMA_CKPT: str(ckpt), MMA_NET: net, MMA_STREAM: f"mma_{weights_hash(ckpt)}"}
    rows = {r.name: r for r in table.rows}

    def config(row: str, seed: int):
        return resolve(table, rows[row], preset, seed, extra, data_root, lambda o, s: _fill(o, subs))

    ref = config(REFERENCE, 0)
    subs.update({f"<regime-1 {k}>": ref.model.branches[0].encoder[k] for k in RNN_KEYS})
    root = Path(ref.data.root)
    face_crops(config(ROWS[2][0], 0), root)
    mma_from_crops(root, ckpt, subs[MMA_STREAM])
    regime1 = {seed: str(cached_train(config(REFERENCE, seed), runs, quiet=True)[2]) for seed in range(seeds)}
    return lambda overlay, seed: _fill(overlay, {**subs, REGIME1: regime1.get(seed, REGIME1)})


def _fill(value, subs: dict):
    if isinstance(value, str):
        return subs.get(value, value)
    if isinstance(value, dict):
        return {k: _fill(v, subs) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, subs) for v in value]
    return value


def train_mma_cached(preset: str, folder: Path) -> Path:
    """The MMA checkpoint of a preset: configs/mma/demo.yaml (``MMA_TRAINING``'s overrides) with the
    preset's ``mma_rnn`` architecture at the crops' size, trained once into ``folder/mma-<config hash>``
    (a lock per key, as the run cache); the generated images go to ``folder/mma-images-<their preset>-<seed>``."""
    from omegaconf import OmegaConf

    from eri.features.crops import CROPS_EXTRACTION
    from eri.io import stable_hash
    from eri.mma.config import load_mma_config
    from eri.mma.train import train_mma
    from eri.models.presets import encoder_preset
    from eri.search.ablate import PRESETS

    net = encoder_preset("mma_rnn", PRESETS[preset]["size"])["mma"]
    model = {**net, "crop_size": CROPS_EXTRACTION["extractors"][0]["config"]["size"]}
    cfg = load_mma_config(MMA_CONFIG, [*MMA_TRAINING[preset], f"model={json.dumps(model)}",
                                       "trainer.progress_bar=false"])
    key = OmegaConf.to_container(cfg, resolve=False)  # dataset roots stay "${data.synthetic_root}/...": no paths
    key.pop("out"), key["data"].pop("synthetic_root"), key["trainer"].pop("progress_bar")
    out = folder / f"mma-{stable_hash(key)}"
    cfg.out = str(out)
    cfg.data.synthetic_root = str(folder / f"mma-images-{cfg.data.synthetic}-{cfg.data.synthetic_seed}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "metrics.json").exists():
            train_mma(cfg)
    return out / json.loads((out / "metrics.json").read_text())["checkpoint"]


def weights_hash(ckpt) -> str:
    """A hash of a train_mma checkpoint's weights (not its bytes: those hold paths and trainer state)."""
    import torch

    from eri.io import load_torch

    state = load_torch(ckpt, "MMA checkpoint")["state_dict"]
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def face_crops(cfg, root: Path) -> None:
    """The crops stream of an end-to-end row's data, made as training makes it (a ``*-faces`` preset: the
    videos generated, then their crops extracted); ConfigError when a real dataset has none."""
    from eri.data.datamodule import ERIDataModule
    from eri.features.crops import extract_face_crops

    extract_face_crops(ERIDataModule.from_config(cfg, progress=False))
    if not (root / "features" / CROPS / "index.csv").is_file():
        raise ConfigError(f"table {NAME} needs the face crops: {root}/features/{CROPS} not found (python "
                          f"tools/extract.py --config configs/extract/crops.yaml --data-root {root})")


def mma_from_crops(root: Path, ckpt: Path, stream: str) -> None:
    """Write stream ``stream``: the ``mma`` extractor on every stored crop with a face (zeros elsewhere, as
    extraction writes), float16, the crops' timestamps and validity. Done once per (crops, checkpoint):
    skipped when its index exists under the same config hash."""
    from eri.data.crops import read_crops
    from eri.data.store import FeatureStore
    from eri.features.extractors import MMAExtractor
    from eri.io import stable_hash
    from eri.streams import FRAME, StreamMeta

    store = FeatureStore(root)
    crops = store.stream_meta(CROPS)
    config = {"weights": str(ckpt), "from_stream": CROPS}
    chash = stable_hash({"mma": stream, "crops": crops.config_hash})
    if (store.path(stream, "index", ".csv").is_file()
            and store.stream_meta(stream).config_hash == chash):
        return
    ext = MMAExtractor(weights=str(ckpt))
    store.write_meta(stream, StreamMeta(stream, 26, FRAME, "float16", "mma", None, chash, config, crops.faces,
                                        crops.decode, {**ext.metadata(), "note": f"computed from stream {CROPS}"}))
    rows = []
    for vid in store.index(CROPS)["File_ID"].astype(str):
        pixels, valid, times = read_crops(store, CROPS, vid)
        feats = np.zeros((len(valid), 26), np.float32)
        if valid.any():
            feats[valid] = ext(pixels[valid])
        store.write(stream, vid, feats.astype(np.float16), valid, times, extra={"config_hash": np.array([chash])})
        rows.append({"File_ID": vid, "n_steps": len(valid), "n_valid": int(valid.sum())})
    store.write_index(stream, rows)  # last: marks the stream complete
