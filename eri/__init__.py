"""eri: video-level Emotional Reaction Intensity estimation (Hume-Reaction, ABAW5 / MuSe 2022).

    import eri
    predictor = eri.load_model("runs/demo/model.ckpt")      # one file: weights, spec, policy, extraction settings
    predictor.predict(["a.mp4", "b.webm"])                  # DataFrame: File_ID, 7 intensities, note
    predictor.predict_features("data/hume-small")           # from a feature store
"""

from eri.constants import EMOTIONS, STREAMS, VERSION

__version__ = VERSION
__all__ = ["EMOTIONS", "STREAMS", "__version__", "load_model"]


def load_model(path, device: str = "cpu"):
    """A `eri.inference.Predictor` from a model file or a run directory (imported on use: torch is heavy)."""
    from eri.inference import load_model as _load

    return _load(path, device)
