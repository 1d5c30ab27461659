"""A trained model as one file: ``predictor = eri.load_model(path)``, then
``predictor.predict(videos)`` (extract, then predict) or ``predictor.predict_features(store)``.

``path`` is a model file (``<run>/model.ckpt``, or any Lightning checkpoint the run wrote): each
carries its `ModelSpec` (architecture, standardisation statistics, input policy, train-label mean,
each stream's extraction settings), so prediction needs that file and the videos, nothing else. A
run directory works too, and so do run directories written before checkpoints carried a spec (the
spec is then rebuilt from their ``config.yaml``, ``streams/*.json`` and training labels, read through
`eri.runs`).

The input rule is the one training uses (`eri.data.dataset.read_video` and `collate`): frame
stride, frames without a face dropped, column slices, padding; a video under the valid-frame minimum
(or with no step in a stream) is predicted with the mean training label and a note says why.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from eri.constants import EMOTIONS
from eri.data.dataset import InputPolicy, VideoInput, collate, parse_stream, read_video, spec_dim
from eri.data.labels import train_mean
from eri.data.store import open_features, unlearned
from eri.errors import CheckpointError, InputError
from eri.io import atomic_write_text, check_name, load_torch
from eri.models.spec import KEY as SPEC_KEY
from eri.models.spec import ModelSpec
from eri.runs import CHECKPOINTS, CONFIG, MODEL, Run, best_checkpoint


class Predictor:
    """A model and what it needs to turn stored features (or videos) into the 7 intensities."""

    def __init__(self, model: torch.nn.Module, spec: ModelSpec, source: str = ""):
        self.model, self.spec, self.source = model.eval(), spec, source
        try:
            self.policy = InputPolicy(**spec.policy)
        except TypeError as e:
            raise CheckpointError(f"{source}: its input policy is not one eri knows ({e})") from None
        self.specs = list(spec.stream_dims)
        self.per_frame = {name: m.get("rate") == "frame" for name, m in spec.streams.items()}
        self.train_mean = np.asarray(spec.train_mean, np.float64)

    # ---------------------------------------------------------------- features -> intensities
    @torch.no_grad()
    def forward(self, videos: list[VideoInput], batch_size: int = 32) -> np.ndarray:
        """(N, 7) intensities of usable videos, in padded batches (the training collate)."""
        out, dev = [], next(self.model.parameters()).device
        for start in range(0, len(videos), batch_size):
            items = [{"index": i, "x": {s: torch.from_numpy(v.x[s]) for s in self.specs}, "y": torch.zeros(len(EMOTIONS))}
                     for i, v in enumerate(videos[start : start + batch_size])]
            batch = collate(items)
            x = {s: t.to(dev) for s, t in batch["x"].items()}
            out.append(self.model(x, {s: t.to(dev) for s, t in batch["lengths"].items()}).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(EMOTIONS)))

    def read(self, store, ids: list[str] | None = None) -> dict[str, VideoInput]:
        """Each video of a feature store (a path or an open store) as the model sees it."""
        source = open_features(store) if isinstance(store, (str, Path)) else store
        if ids is None:
            first = parse_stream(self.specs[0])[0]
            ids = list(source.index(first)["File_ID"])
        from eri.data.crops_dataset import crop_streams, read_crop_video

        crops = crop_streams(self.spec.branches)
        if crops:  # an end-to-end model reads face crops, lazily (eri.data.crops_dataset)
            return {vid: read_crop_video(source, vid, crops, self.per_frame, self.policy) for vid in ids}
        return {vid: read_video(source, vid, self.specs, self.per_frame, self.policy) for vid in ids}

    def predict_features(self, store, ids: list[str] | None = None, batch_size: int = 32,
                         videos: dict[str, VideoInput] | None = None) -> pd.DataFrame:
        """``File_ID``, the 7 intensities, ``n_valid_<stream>`` per per-frame stream and ``note``, one row
        per video of ``store`` (or ``ids``). Unusable videos get the mean training label."""
        videos = videos if videos is not None else self.read(store, ids)
        usable = [vid for vid, v in videos.items() if v.usable]
        pred = dict(zip(usable, self.forward([videos[v] for v in usable], batch_size)))
        rows = []
        for vid, v in videos.items():
            p, note = pred.get(vid), "; ".join(v.problems)
            if p is None:
                p = self.train_mean
                note += "; predicted with the mean training label" if np.isfinite(p).all() else "; no prediction"
            rows.append({"File_ID": vid, **dict(zip(EMOTIONS, map(float, p))), "note": note,
                         **{f"n_valid_{s}": n for s, n in v.n_valid.items() if self.per_frame.get(s)}})
        return pd.DataFrame(rows)

    # ---------------------------------------------------------------- videos -> intensities
    def extraction(self, device: str = "cpu"):
        """The extraction config for new videos; `InputError` (one line) when the model's streams cannot
        be computed from a video (trained on synthetic, organiser or imported features)."""
        return extraction_config(self.spec.streams, device, self.source or "the model")

    def predict(self, videos: list[str | Path], out: str | Path | None = None, device: str = "cpu",
                figures: bool = False, progress: bool = True) -> pd.DataFrame:
        """Extract what the model needs from ``videos`` (into ``<out>/store``, a temporary folder when
        ``out`` is None), predict, and with ``figures`` draw ``<out>/<id>.png``. One row per video, in
        order; a video whose extraction failed gets NaN and the error in ``note``."""
        from eri.data.labels import normalise_id
        from eri.features.pipeline import Extraction

        ecfg = self.extraction(device)  # first: a model that cannot read videos costs no work
        for name, meta in self.spec.streams.items():
            why = unlearned(name, meta)
            if why:
                warnings.warn(f"{self.source or 'the model'}: {why}")
        videos = [Path(v) for v in videos]
        missing = [str(v) for v in videos if not v.is_file()]
        if missing:
            raise InputError(f"video file(s) not found: {missing}")
        ids = [check_name(normalise_id(v.stem), str(v)) for v in videos]
        if len(set(ids)) != len(ids):
            raise InputError(f"two videos share a file name stem: {[v.name for v in videos]}")
        tmp = tempfile.TemporaryDirectory(prefix="eri-predict-") if out is None else None
        out = Path(tmp.name if tmp else out)
        media = out / "store" / "videos"
        try:
            media.mkdir(parents=True, exist_ok=True)
            for old in [*media.iterdir(), out / "store" / "extraction_report.csv"]:
                if old.is_symlink() or old.name == "extraction_report.csv" and old.is_file():
                    old.unlink()  # an earlier call's links and report: this call extracts and reports its own videos
            for v, vid in zip(videos, ids):  # the store's dataset is a folder of links to the given files
                for old in (out / "store" / "features").glob(f"*/{vid}.npz"):
                    old.unlink()  # an earlier call's video of the same name: never reused
                (media / f"{vid}{v.suffix.lower()}").symlink_to(v.resolve())
            ecfg.videos_dir = "videos"
            job = Extraction(ecfg, out / "store", progress=progress)
            try:
                failed = set(job.run()["failed"])
            except BaseException:  # refused or interrupted: no link of this call is left for the next
                for link in media.iterdir():
                    if link.is_symlink():
                        link.unlink()
                raise
            ok = [vid for vid in ids if vid not in failed]
            inputs = self.read(out / "store", ok) if ok else {}
            df = self.predict_features(None, videos=inputs).set_index("File_ID") if ok else None  # None: all failed
            rows = []
            for v, vid in zip(videos, ids):
                if vid in failed:
                    errors = "; ".join(r["error"] for r in job.report if r["File_ID"] == vid and r["failed"])
                    rows.append({"video": str(v), "File_ID": vid, **{e: np.nan for e in EMOTIONS},
                                 "note": f"extraction failed: {errors}"})
                else:
                    rows.append({"video": str(v), "File_ID": vid, **df.loc[vid].to_dict()})
            result = pd.DataFrame(rows)
            if figures and ok and tmp is None:  # figures need a folder to stay in
                self._figures(out, inputs, result.set_index("File_ID"))
            if tmp is None:
                atomic_write_text(out / "predictions.csv", result.to_csv(index=False))
            return result
        finally:
            if tmp:
                tmp.cleanup()

    @torch.no_grad()
    def _figures(self, out: Path, inputs: dict[str, VideoInput], result: pd.DataFrame) -> None:
        from eri.inference.figures import plot_video, token_attention

        branch_streams = {n: b.streams for n, b in self.model.branches.items()}
        dev = next(self.model.parameters()).device
        for vid, v in inputs.items():
            attn = {}
            if v.usable:
                batch = collate([{"index": 0, "x": {s: torch.from_numpy(v.x[s]) for s in self.specs}, "y": torch.zeros(7)}])
                x = {s: t.to(dev) for s, t in batch["x"].items()}
                lengths = {s: t.to(dev) for s, t in batch["lengths"].items()}
                attn = {b: a[0] for b, a in token_attention(self.model, x, lengths).items()}
            row = result.loc[vid]
            plot_video(out / f"{vid}.png", vid, v.x, v.times, attn, branch_streams,
                       row[list(EMOTIONS)].to_numpy(float), row["note"], self.spec.streams)


# ----------------------------------------------------------------------------- loading
def load_model(path: str | Path, device: str = "cpu") -> Predictor:
    """A `Predictor` from a model file (``model.ckpt`` or a run's Lightning checkpoint) or a run directory."""
    path = Path(path)
    ckpt = _model_file(path)
    blob = load_torch(ckpt, "model file", map_location=device)
    if not isinstance(blob, dict) or not isinstance(blob.get("state_dict"), dict):
        raise CheckpointError(f"{ckpt} holds no state_dict: not an eri model file")
    if SPEC_KEY in blob:
        spec = ModelSpec.from_checkpoint(blob[SPEC_KEY], str(ckpt))
    else:  # a run directory written before checkpoints carried their spec
        spec = legacy_spec(_run_dir(ckpt), blob["state_dict"])
    from eri.features.config import check_stream_settings

    check_stream_settings(spec.streams, str(ckpt))  # faces.every_k: 0 is one line here, not a crash in extraction
    from eri.models.e2e import weights_follow

    with weights_follow():  # the file's weights replace any initialisation from other files (mma_rnn)
        model = spec.build()
    try:
        model.load_state_dict({k[len("model."):]: v for k, v in blob["state_dict"].items() if k.startswith("model.")})
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt}: its weights do not fit its model spec ({str(e)[:300]})") from None
    return Predictor(model.to(device), spec, str(ckpt))


def _model_file(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise InputError(f"{path}: no such model file or run directory")
    if (path / MODEL).is_file():
        return path / MODEL
    return best_checkpoint(path)


def _run_dir(ckpt: Path) -> Path:
    run = ckpt.parent.parent if ckpt.parent.name == CHECKPOINTS else ckpt.parent
    if not (run / CONFIG).is_file():
        raise CheckpointError(f"{ckpt} carries no model spec and sits in no run directory (config.yaml) to rebuild it from")
    return run


def legacy_spec(run: Path, state_dict: dict) -> ModelSpec:
    """The spec of a run written before checkpoints carried one: its config, its ``streams/*.json`` (or
    the training store's metadata), the statistics from the weights, the train-label mean from its
    labels (`_legacy_train_mean`)."""
    from eri.config import streams_of

    cfg = Run(run).config
    specs = streams_of(cfg)
    metas = {}
    for name in dict.fromkeys(parse_stream(s)[0] for s in specs):
        found = next((p for p in (run / "streams" / f"{name}.json", Path(cfg.data.root) / "features" / name / "meta.json")
                      if p.is_file()), None)
        if found is None:
            raise InputError(f"{run}: the settings of stream '{name}' are missing (streams/{name}.json)")
        metas[name] = json.loads(found.read_text())
    dims = {s: spec_dim(s, metas[parse_stream(s)[0]]) for s in specs}
    stats = None
    if cfg.data.standardize:  # each branch's buffers are its streams' statistics, concatenated
        stats = {}
        for i, b in enumerate(OmegaConf.to_container(cfg.model.branches)):
            name = b.get("name") or f"branch{i}"
            mean, std = state_dict[f"model.branches.{name}.mean"], state_dict[f"model.branches.{name}.std"]
            for s, m, sd in zip(b["streams"], mean.split([dims[s] for s in b["streams"]]),
                                std.split([dims[s] for s in b["streams"]])):
                stats[s] = (m, sd)
    d = cfg.data
    return ModelSpec(
        branches=OmegaConf.to_container(cfg.model.branches, resolve=True),
        fusion=OmegaConf.to_container(cfg.model.fusion, resolve=True),
        stream_dims=dims, stats=stats,
        policy=dataclasses.asdict(InputPolicy.of(d)),
        train_mean=_legacy_train_mean(Run(run), metas), streams=metas, eri_version="<0.2 (run directory)",
    )


def _legacy_train_mean(run: Run, metas: dict[str, dict]) -> list[float]:
    """The mean label over the usable training videos (`eri.data.labels.train_mean`, the rule training
    applies): the run's ``labels.csv`` says which those were; without one (older runs) the labels come
    from its data.root (folds applied) and usability is judged from the store's index. NaN when unreadable."""
    try:
        table = run.label_table.reset_index()
        train = table[table["split"] == "train"]
        if "usable" in table.columns:
            usable = train["usable"].astype(bool).to_numpy()
        else:
            usable = np.ones(len(train), bool)
            for name, meta in metas.items():
                index = open_features(run.root).index(name).set_index("File_ID")
                if "n_valid" in index:
                    need = run.config.data.min_valid_frames if meta.get("rate") == "frame" else 1
                    usable &= train["File_ID"].isin(index.index[index["n_valid"] >= need]).to_numpy()
        return [float(x) for x in train_mean(table, usable)]
    except (InputError, OSError):
        return [float("nan")] * len(EMOTIONS)


def extraction_config(metas: dict[str, dict], device: str = "cpu", source: str = "the model"):
    """The extraction config that reproduces the training streams (`eri.features.config.extraction_config`:
    the stream descriptors decoded where the extraction schema lives)."""
    from eri.features.config import extraction_config as from_streams

    return from_streams(metas, device, source)
