"""Face-crop videos as a stream of the feature store (issue 21, item 1): the aligned face crops themselves,
uint8 RGB, for the end-to-end model (the MMA CNN and the masked RNN trained jointly), which needs pixels
where every other stream holds features.

The ``crops`` extractor (kind ``face``, registered lazily in `eri.features.extractors`) resizes the pipeline's aligned crops (``faces.crop_size``) to
``size`` (64 default, 112 allowed). Its meta.json names the codec ``crops`` (`eri.data.store.CODECS`), so
`FeatureStore.write` stores the frames through `CropCodec` instead of a (T, D) ``features`` array: every
``stride``-th frame (frames not kept are not stored; their timestamps say where the kept ones are), with
``valid`` and ``timestamps`` as usual (frames without a face: zeros, valid False). meta.json: ``dtype``
"uint8", ``dim`` = size*size*3 (pixels per frame), and ``shape`` [S, S, 3], ``stride``, ``encoding`` in the
extractor metadata. Hash, resume, shards, index (``n_steps``: stored frames) and report are the store's.
Extraction hands each group of crops to the store's chunk writer as it is extracted (`eri.data.crops.CropWriter`),
so a video of any length is written in flat memory; the other face streams are gathered and written whole.

The storage format, the codec and the lazy reader are `eri.data.crops` (the store owns formats).
"""

from __future__ import annotations

import numpy as np

from eri.data.crops import CODEC, ENCODINGS
from eri.errors import ConfigError
from eri.features.base import Extractor


class FaceCrops(Extractor):
    """Aligned face crops -> the same crops at ``size`` x ``size``, flattened (N, size*size*3) uint8; the
    store's `CropCodec` keeps every ``stride``-th frame and encodes them (``png``, ``jpeg`` at ``quality``, ``raw``)."""

    name = "crops"
    kind = "face"
    dim = 64 * 64 * 3

    def __init__(self, size: int = 64, stride: int = 1, encoding: str = "png", quality: int = 95):
        super().__init__(size=size, stride=stride, encoding=encoding, quality=quality)
        if int(size) < 8 or int(stride) < 1 or encoding not in ENCODINGS or not 1 <= int(quality) <= 100:
            raise ConfigError(f"extractor 'crops': size >= 8, stride >= 1, encoding one of {ENCODINGS}, quality 1..100; "
                              f"got size {size}, stride {stride}, encoding {encoding!r}, quality {quality}")
        self.size, self.stride, self.encoding, self.quality = int(size), int(stride), encoding, int(quality)
        self.dim = self.size * self.size * 3

    def __call__(self, crops) -> np.ndarray:
        import torch

        x = crops if torch.is_tensor(crops) else torch.as_tensor(np.ascontiguousarray(crops))
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
            raise ValueError(f"expected uint8 face crops (N, S, S, 3), got {tuple(x.shape)} {x.dtype}")
        if x.shape[1] != self.size:
            y = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2).float(), size=(self.size, self.size),
                                                mode="bilinear", antialias=True, align_corners=False)
            x = y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        return x.reshape(len(x), -1).cpu().numpy()

    def metadata(self) -> dict:
        meta = {"codec": CODEC, "encoding": self.encoding, "shape": [self.size, self.size, 3], "stride": self.stride,
                "note": "face-crop images for the end-to-end model (eri.features.crops.read_crops), not features"}
        if self.encoding == "jpeg":
            meta["quality"] = self.quality
        return meta


CROPS_EXTRACTION = {  # configs/extract/crops.yaml (tests/test_mma_e2e.py checks they agree)
    "device": "auto", "dtype": "float16", "faces": {"crop_size": 224, "every_k": 1},
    "extractors": [{"name": "crops", "config": {"size": 64, "stride": 1, "encoding": "png"}}],
}


def extract_face_crops(dm) -> None:
    """Before training a crop model on ``data.synthetic``: a ``*-faces`` preset is generated (videos), then its
    crops extracted with `CROPS_EXTRACTION` (resumable: done videos are skipped). Called by
    `eri.training.run.prepared_datamodule` in the first process of a machine; other presets: nothing."""
    from eri.config import load_structured
    from eri.data.dataset import parse_stream
    from eri.data.synthetic import ensure_synthetic
    from eri.data.synthetic.knobs import FACE_KNOBS
    from eri.features.config import ExtractConfig
    from eri.features.pipeline import Extraction

    if not (dm.crops and dm.synthetic in FACE_KNOBS):
        return
    ensure_synthetic(dm.root, dm.synthetic, seed=dm.synthetic_seed, features=False)
    for name in dict.fromkeys(parse_stream(s)[0] for s in dm.crops):
        flat = [f"{k}={v}" for k, v in CROPS_EXTRACTION.items() if not isinstance(v, (dict, list))]
        flat += [f"faces.{k}={v}" for k, v in CROPS_EXTRACTION["faces"].items()] + ["videos_dir=videos"]
        extractors = [{**CROPS_EXTRACTION["extractors"][0], "stream": name}]
        cfg = load_structured(ExtractConfig, None, flat, updates={"extractors": extractors})
        Extraction(cfg, dm.root, progress=dm.progress).run()
