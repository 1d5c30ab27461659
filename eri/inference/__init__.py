"""Prediction for new videos and stored features from one trained model file (`load_model`);
`figures` draws the per-video figure."""

from eri.inference.predictor import Predictor, load_model

__all__ = ["Predictor", "load_model"]
