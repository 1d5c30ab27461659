"""Names and sizes shared by every part of eri: the 7 emotions, the stream catalogue, and the label
spaces of the frame-level affect model (basic expressions, action units, the expression-AU table)."""

from eri.streams import FRAME, StreamMeta

VERSION = "0.2.0"  # the package version (pyproject.toml reads it from here)

EMOTIONS = ("Adoration", "Amusement", "Anxiety", "Disgust", "Empathic-Pain", "Fear", "Surprise")
SPLITS = ("train", "val", "test")

# The papers' streams, the one catalogue of them: real extractors of these names write these widths and
# rates, the synthetic generator writes exactly these (`eri.data.synthetic.knobs.SYNTHETIC`), and whatever
# needs a stream's width before a store exists (the training benchmark) reads it here. `rate` is "frame"
# for streams with one step per video frame, else steps per second. Other streams (e.g. MuSe 2022
# organiser features, a new extractor's) are described by their store's meta.json.
CATALOGUE = {m.name: m for m in (
    StreamMeta("holistic", 512, FRAME),  # ResNet18 penultimate layer (paper 004)
    StreamMeta("au", 34, FRAME),  # 17 AU intensities, then 17 occurrences (paper 004)
    StreamMeta("mma", 26, FRAME),  # valence, arousal, 7 expression probs, 17 AU probs (paper 000)
    StreamMeta("audio", 1024, 16000 / 256 / 32),  # 32 MFCC x 32 frames per token, 16 ms hop
)}
STREAMS = {m.name: {"dim": m.dim, "rate": m.rate} for m in CATALOGUE.values()}  # the catalogue as plain values

# The MMA model's label spaces (paper 000): 7 basic expressions and 17 action units, in head order.
EXPRESSIONS = ("Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
AU_IDS = (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 15, 17, 20, 23, 24, 25, 26)

# Expression-AU table (Du, Tao & Martinez 2014; prototypical and observational AUs both count as 1).
EXPRESSION_AUS = {
    "Happiness": (12, 25, 6),
    "Sadness": (4, 15, 1, 6, 11, 17),
    "Fear": (1, 4, 20, 25, 2, 5, 26),
    "Anger": (4, 7, 24, 10, 17, 23),
    "Surprise": (1, 2, 25, 26, 5),
    "Disgust": (9, 10, 17, 4, 24),
    "Neutral": (),
}
