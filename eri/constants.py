"""Names and sizes shared by every part of eri: the 7 emotions and the stream catalogue."""

EMOTIONS = ("Adoration", "Amusement", "Anxiety", "Disgust", "Empathic-Pain", "Fear", "Surprise")
SPLITS = ("train", "val", "test")

# Per-step width and rate of the streams the papers use. `rate` is "frame" for streams with one
# step per video frame, else steps per second. Real extractors and the synthetic generator both
# write these widths; other streams (e.g. MuSe 2022 organiser features) are read from the store.
STREAMS = {
    "holistic": {"dim": 512, "rate": "frame"},  # ResNet18 penultimate layer (paper 004)
    "au": {"dim": 34, "rate": "frame"},  # 17 AU intensities, then 17 occurrences (paper 004)
    "mma": {"dim": 26, "rate": "frame"},  # valence, arousal, 7 expression probs, 17 AU probs (paper 000)
    "audio": {"dim": 1024, "rate": 16000 / 256 / 32},  # 32 MFCC x 32 frames per token, 16 ms hop
}
