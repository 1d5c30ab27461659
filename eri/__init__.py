"""eri: video-level Emotional Reaction Intensity estimation (Hume-Reaction, ABAW5 / MuSe 2022)."""

from eri.constants import EMOTIONS, STREAMS

__version__ = "0.1.0"
__all__ = ["EMOTIONS", "STREAMS", "__version__"]
