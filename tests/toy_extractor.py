"""A toy extractor, all of it in one file: what adding a stream to eri takes (tests/test_streams.py).

Log energy and zero-crossing rate of the soundtrack over windows of ``window_s`` seconds: 2 columns,
1 / window_s steps per second, deterministic, no weights. Importing this module registers it; nothing
else in eri names it, yet extraction, training, prediction from video and the benchmarks take it.
"""

import numpy as np

from eri.features.base import Extractor
from eri.features.extractors import register_extractor
from eri.features.video import SAMPLE_RATE

NAME = "toy_loudness"


@register_extractor(NAME)
class ToyLoudness(Extractor):
    """Soundtrack -> log energy and zero-crossing rate per window (2 columns)."""

    name = NAME
    kind = "audio"
    dim = 2
    rate = 4.0  # steps per second with the default window

    def __init__(self, window_s: float = 0.25):
        super().__init__(window_s=window_s)
        self.n = max(1, int(round(SAMPLE_RATE * window_s)))
        self.rate = SAMPLE_RATE / self.n

    def __call__(self, wave) -> tuple[np.ndarray, np.ndarray]:
        w = np.asarray(wave, np.float32)
        k = len(w) // self.n
        x = w[: k * self.n].reshape(k, self.n)
        energy = np.log(np.mean(x.astype(np.float64) ** 2, axis=1) + 1e-8)
        zcr = np.mean(np.signbit(x[:, 1:]) != np.signbit(x[:, :-1]), axis=1)
        times = (np.arange(k) + 0.5) / self.rate
        return np.stack([energy, zcr], axis=1).astype(np.float32), times.astype(np.float32)

    def metadata(self) -> dict:
        return {"columns": ["log energy", "zero-crossing rate"]}
