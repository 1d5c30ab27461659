"""The generator's knobs: presets, what each knob means, and the constants every part shares."""

from __future__ import annotations

import copy

from eri.constants import CATALOGUE
from eri.errors import ConfigError
from eri.io import stable_hash

GENERATOR_VERSION = 2  # 2: mma sees Adoration, Anxiety, Empathic-Pain weakly (was 0.5 for all)

# Basic expressions of the MMA head, in its order; and the 17 AUs of the MMA head / OpenFace.
# Emotion -> expression weights (how strongly an event of the emotion shows as each basic expression).
EMOTION_EXPRESSIONS = {
    "Adoration": {"Happiness": 0.6},
    "Amusement": {"Happiness": 1.0},
    "Anxiety": {"Fear": 0.5, "Sadness": 0.2, "Anger": 0.2},
    "Disgust": {"Disgust": 1.0, "Anger": 0.2},
    "Empathic-Pain": {"Sadness": 1.0},
    "Fear": {"Fear": 1.0},
    "Surprise": {"Surprise": 1.0},
}
# Emotion-specific AUs on top of the expression route (so emotions sharing an expression still differ).
EMOTION_EXTRA_AUS = {
    "Adoration": {1: 0.4, 6: 0.3},  # soft smile, raised inner brows, lips mostly closed
    "Amusement": {6: 0.5, 26: 0.5},  # cheek raise, jaw drop (laughing)
    "Anxiety": {4: 0.4, 23: 0.5, 24: 0.5, 17: 0.3},  # brow lowering, lip tightening / pressing
    "Disgust": {9: 0.4, 10: 0.3},
    "Empathic-Pain": {4: 0.4, 7: 0.5, 6: 0.2},  # pain: brow lowering, lid tightening
    "Fear": {5: 0.5, 20: 0.5},  # upper lid raise, lip stretch
    "Surprise": {5: 0.5},
}
MOUTH_TALK_AUS = {25: 1.0, 26: 0.7, 10: 0.2}  # talking opens the mouth
VALENCE = {"Adoration": 0.8, "Amusement": 1.0, "Anxiety": -0.6, "Disgust": -0.8, "Empathic-Pain": -0.7,
           "Fear": -0.8, "Surprise": 0.2}
AROUSAL = {"Adoration": 0.2, "Amusement": 0.8, "Anxiety": 0.6, "Disgust": 0.4, "Empathic-Pain": 0.2,
           "Fear": 0.9, "Surprise": 0.9}

# The streams the generator writes: the catalogue's (eri.constants.CATALOGUE), as it stores them. Each has a
# hand-written recipe in `eri.data.synthetic.generator._video`; a catalogue stream without one is an error there.
SYNTHETIC = {name: m.replace(dtype="float16", extractor="synthetic") for name, m in CATALOGUE.items()}
ALL_STREAMS = tuple(SYNTHETIC)
VISUAL_STREAMS = tuple(name for name, m in SYNTHETIC.items() if m.per_frame)
SPLIT_NAMES = {"train": "Train", "val": "Val", "test": "Test"}
MFCC_HOP_S = 256 / 16000  # 16 ms
MFCC_PER_TOKEN = 32
N_MFCC = 32
TOKEN_S = MFCC_PER_TOKEN * MFCC_HOP_S  # 0.512 s

_TAG = 4_000_000_000  # RNG stream tags above any video index
_TAG_PLAN, _TAG_MIX, _TAG_SUBJECT = _TAG + 1, _TAG + 2, _TAG + 3
_TAG_FACE, _TAG_FACE_SUBJECT = _TAG + 4, _TAG + 5  # face videos (faces.py): per-video and per-subject draws

# ---------------------------------------------------------------------------------------------- knobs
KNOB_DOCS: dict[str, str] = {
    "n_train": "number of Train videos",
    "n_val": "number of Val videos",
    "n_test": "number of Test videos (they carry labels: the synthetic test split is our benchmark)",
    "videos_per_subject": "mean videos per subject; splits are subject-disjoint (Hume: 25067 / 2222 ~ 11.3)",
    "duration_min": "shortest video in seconds",
    "duration_max": "longest video in seconds",
    "duration_beta": "Beta(a, b) shape of (duration - min) / (max - min); (1.5, 3) gives a mean of ~11.6 s",
    "fps_choices": "frame rates a video may have",
    "fps_probs": "probability of each frame rate in fps_choices",
    "us_fraction": "fraction of subjects from the United States (the rest: South Africa)",
    "age_range": "subject ages are uniform integers in [lo, hi]",
    "label_log_mean": "per-emotion mean of the log-normal latent (calibrated so train label means match Hume)",
    "label_log_sd": "sd of the log-normal latent (spread of true intensities across videos)",
    "label_floor": "intensities below this (in latent units) are 0: gives the rows holding a 0",
    "label_corr": "[emotion, emotion, r] pairs of the latent correlation (others 0); also used for report noise",
    "report_noise": "sd of the self-report noise in log space; sets the ceiling (target 0.6-0.7)",
    "report_noise_corr": "how much of the latent correlation the report noise shares (0: independent, 1: same)",
    "event_extra_mean": "mean of the Poisson number of extra events per present emotion (each has >= 1)",
    "event_rate_shape": "gamma shape of the per-video and per-subject multipliers of event_extra_mean (mean 1)",
    "event_dur_min": "shortest expressive event (s, full width of the raised-cosine bump)",
    "event_dur_max": "longest expressive event (s)",
    "visibility": "{stream: 7 gains}: how strongly each stream sees each emotion's events",
    "amp_jitter": "{stream: sd}: per-event, per-stream relative jitter of the event amplitude",
    "noise": "{stream: sd}: per-step feature noise of each stream (in its latent units)",
    "noise_scale_sd": "log-sd of a per-video, per-stream multiplier of the noise (recording quality)",
    "identity_scale": "{stream: sd}: per-subject static offset of each feature (holistic, audio, au baseline)",
    "talk_rate": "talking segments per second (times a per-subject talkativeness ~ gamma(2)/2)",
    "talk_dur": "[min, max] length of a talking segment in seconds",
    "talk_amp": "{stream: gain}: how strongly talking shows in each stream",
    "head_motion_amp": "amplitude of the slow head-motion channels (holistic only)",
    "noface_frac": "expected fraction of frames without a face (in bursts)",
    "noface_burst": "[min, max] frames of a no-face burst",
    "low_valid_frac": "fraction of videos per split with < 50 valid frames (at least one per split)",
    "low_valid_frames": "[min, max] valid frames of such a video (a contiguous stretch)",
    "au_gain": "AU intensity (0-5 scale) of an AU loading of 1 at activation 1",
    "au_occ_threshold": "AU occurrence = 1 where the noisy activation (intensity units) exceeds this",
    "mma_expr_gain": "logit gain of the MMA expression head per unit expression activation",
    "mma_neutral_logit": "logit of Neutral at rest (the other expressions are at 0)",
    "mma_au_gain": "logit gain of the MMA AU head per unit AU activation",
    "mma_au_bias": "logit offset of the MMA AU head at rest (negative: AUs mostly off)",
    "mma_va_gain": "gain inside tanh for valence and arousal",
    "mix_leak": "{stream: sd}: dense leakage of every source into every holistic dim / audio coefficient",
    "mix_free_frac": "fraction of holistic dims / MFCC coefficients owned by no source (identity + noise only)",
}

_BASE: dict = {
    "videos_per_subject": 11.3,
    "duration_min": 9.9,
    "duration_max": 15.0,
    "duration_beta": [1.5, 3.0],
    "fps_choices": [25.0, 29.97, 30.0],
    "fps_probs": [0.3, 0.35, 0.35],
    "us_fraction": 0.55,
    "age_range": [18, 70],
    "label_log_mean": [-1.199, -0.509, -1.128, -1.522, -1.605, -1.257, -0.68],
    "label_log_sd": 0.7,
    "label_floor": 0.1,
    "label_corr": [
        ["Adoration", "Amusement", 0.45], ["Anxiety", "Fear", 0.87], ["Anxiety", "Empathic-Pain", 0.4],
        ["Fear", "Empathic-Pain", 0.35], ["Disgust", "Empathic-Pain", 0.3], ["Disgust", "Anxiety", 0.25],
        ["Disgust", "Fear", 0.3], ["Surprise", "Fear", 0.3], ["Surprise", "Amusement", 0.25],
        ["Surprise", "Anxiety", 0.2], ["Adoration", "Empathic-Pain", 0.2],
    ],
    "report_noise": 0.6,
    "report_noise_corr": 1.0,
    "event_extra_mean": 0.5,
    "event_rate_shape": 1.5,
    "event_dur_min": 0.3,
    "event_dur_max": 1.5,
    "visibility": {
        #            Ado   Amu   Anx   Dis   EmP   Fear  Sur
        "holistic": [1.0, 1.0, 0.1, 0.9, 0.1, 0.15, 0.9],
        "au": [0.2, 0.6, 1.0, 1.0, 1.0, 1.0, 0.3],
        "mma": [0.3, 0.6, 0.35, 0.6, 0.25, 0.5, 0.6],
        "audio": [0.05, 1.0, 0.4, 0.2, 0.3, 0.9, 1.0],
    },
    "amp_jitter": {"holistic": 0.12, "au": 0.12, "mma": 0.12, "audio": 0.12},
    "noise": {"holistic": 0.05, "au": 0.03, "mma": 0.08, "audio": 0.1},
    "noise_scale_sd": 0.2,
    "identity_scale": {"holistic": 0.5, "audio": 0.5, "au": 0.3},
    "talk_rate": 0.12,
    "talk_dur": [0.8, 3.5],
    "talk_amp": {"holistic": 0.6, "au": 0.6, "mma": 0.6, "audio": 0.6},
    "head_motion_amp": 0.25,
    "noface_frac": 0.01,
    "noface_burst": [3, 15],
    "low_valid_frac": 0.01,
    "low_valid_frames": [15, 49],
    "au_gain": 3.0,
    "au_occ_threshold": 1.0,
    "mma_expr_gain": 4.0,
    "mma_neutral_logit": 2.0,
    "mma_au_gain": 5.0,
    "mma_au_bias": -2.5,
    "mma_va_gain": 1.5,
    "mix_leak": {"holistic": 0.1, "audio": 0.1},
    "mix_free_frac": 0.25,
}

PRESETS: dict[str, dict] = {
    # Tests: a few seconds to generate; few subjects per split.
    "tiny": {**copy.deepcopy(_BASE), "n_train": 40, "n_val": 16, "n_test": 16, "videos_per_subject": 4.0},
    # Demo: enough videos that a model learns something and the metric is stable.
    "hume-small": {**copy.deepcopy(_BASE), "n_train": 1600, "n_val": 500, "n_test": 500},
    # The real split sizes of Hume-Reaction (ABAW5).
    "hume-full": {**copy.deepcopy(_BASE), "n_train": 15806, "n_val": 4657, "n_test": 4604},
}

# Worlds: the hume-small setting with one hard thing changed, to ask whether a modelling choice that wins in
# one synthetic world also wins in others (`eri benchmark worlds`). Each is an overlay of knobs (a callable
# of the base knobs where it scales them), generated at two sizes: `small` (hume-small's split sizes) and
# `tiny` (the tiny preset's). The presets are named `<world>-<size>`; the baseline world is hume-small / tiny.
WORLDS: dict[str, tuple[str, object]] = {
    "hume": ("the baseline: hume-small's knobs", {}),
    "long-clips": ("videos of 20-40 s instead of 10-15 s (the same events, more frames between them)",
                   {"duration_min": 20.0, "duration_max": 40.0}),
    "sparse-events": ("one event per present emotion (no extra events): less evidence per video",
                      {"event_extra_mean": 0.0}),
    "heavy-nuisance": ("2.5x the talking, twice its strength, 3x the head motion, twice the feature noise",
                       lambda k: {"talk_rate": 2.5 * k["talk_rate"],
                                  "talk_amp": {s: 2 * v for s, v in k["talk_amp"].items()},
                                  "head_motion_amp": 3 * k["head_motion_amp"],
                                  "noise": {s: 2 * v for s, v in k["noise"].items()}}),
    "few-train": ("a quarter of the training videos (400 at small size)", lambda k: {"n_train": k["n_train"] // 4}),
    "missing-faces": ("25% of frames without a face in long bursts, 10% of videos under 50 valid frames",
                      {"noface_frac": 0.25, "noface_burst": [10, 90], "low_valid_frac": 0.1}),
}
WORLD_SIZES = {"small": "hume-small", "tiny": "tiny"}  # size -> the preset whose knobs a world changes


def world_preset(world: str, size: str) -> str:
    """The synthetic preset of ``world`` at ``size`` (``hume`` is hume-small / tiny themselves)."""
    if world not in WORLDS or size not in WORLD_SIZES:
        raise ConfigError(f"unknown world '{world}' or size '{size}'; worlds: {', '.join(WORLDS)}; sizes: "
                          f"{', '.join(WORLD_SIZES)}")
    return WORLD_SIZES[size] if world == "hume" else f"{world}-{size}"


for _world, (_, _overlay) in WORLDS.items():
    for _size, _base in WORLD_SIZES.items():
        if _world != "hume":
            _knobs = copy.deepcopy(PRESETS[_base])
            PRESETS[world_preset(_world, _size)] = {**_knobs, **(_overlay(_knobs) if callable(_overlay) else _overlay)}
assert all(set(p) == set(KNOB_DOCS) for p in PRESETS.values()), "every knob needs a doc and a value"


# Face videos (`eri.data.synthetic.faces`): presets whose folder holds rendered face videos, not features. Their
# feature knobs above (plan, events, talking, head motion, missing faces) are in PRESETS like any preset's; the
# knobs of the rendering are here, per preset.
FACE_KNOB_DOCS: dict[str, str] = {
    "canvas": "frame width and height in pixels, a multiple of 128 (libx264 then writes the same bytes every run: "
              "narrower frames left row padding that changed them); MTCNN needs faces of >= 40 px",
    "face_scale": "[min, max] of the per-video face size (aligned-crop unit in fractions of the canvas)",
    "face_visibility": "7 gains: how strongly each emotion's events show as expression, AUs and valence/arousal "
                       "(what the MMA heads name); low for Adoration and Empathic-Pain, as in the mma stream",
    "face_jitter": "per-event relative jitter of the face's amplitude",
    "cue_visibility": "{cue: 7 gains}: how strongly each emotion's events show through a cue no MMA head names: "
                      "tears (streaks down the cheeks) and gaze (the pupils turned aside and down)",
    "talk_gain": "how strongly talking opens the mouth (AUs 25, 26 and 10), the nuisance on the mouth",
    "pose_drift": "[shift, rotation, scale] per unit of the plan's head-motion channels (canvas fraction, rad, "
                  "relative)",
    "lighting_drift": "[brightness (0-255), contrast (relative)] amplitude of the slow per-video lighting drift",
    "pixel_noise": "sd of the per-pixel noise (0-255)",
    "crf": "libx264 constant rate factor of the written videos (0 lossless; 12 visually lossless)",
}
_FACE_BASE: dict = {
    "canvas": 128,
    "face_scale": [0.45, 0.6],
    #                   Ado   Amu  Anx  Dis  EmP  Fear Sur
    "face_visibility": [0.3, 1.0, 0.6, 1.0, 0.25, 0.9, 1.0],
    "face_jitter": 0.12,
    "cue_visibility": {"tears": [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0], "gaze": [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]},
    "talk_gain": 0.6,
    "pose_drift": [0.1, 0.3, 0.1],
    "lighting_drift": [12.0, 0.1],
    "pixel_noise": 3.0,
    "crf": 12,
}
FACE_KNOBS: dict[str, dict] = {"tiny-faces": copy.deepcopy(_FACE_BASE), "small-faces": copy.deepcopy(_FACE_BASE)}
_FACE_PLAN = {"fps_choices": [10.0], "fps_probs": [1.0]}  # a low frame rate: rendering costs per frame
PRESETS["tiny-faces"] = {**copy.deepcopy(PRESETS["tiny"]), **_FACE_PLAN, "n_train": 24, "n_val": 8, "n_test": 8,
                         "duration_min": 5.0, "duration_max": 8.0}
PRESETS["small-faces"] = {**copy.deepcopy(PRESETS["hume-small"]), **_FACE_PLAN, "n_train": 400, "n_val": 120,
                          "n_test": 120, "duration_min": 6.0, "duration_max": 10.0}
assert all(set(p) == set(FACE_KNOB_DOCS) for p in FACE_KNOBS.values()), "every face knob needs a doc and a value"


def resolve_preset(preset: str, **overrides) -> dict:
    """The knob dict of ``preset`` with ``overrides`` applied (ValueError on unknown names)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown synthetic preset '{preset}'; valid presets: {', '.join(PRESETS)}")
    bad = sorted(set(overrides) - set(KNOB_DOCS))
    if bad:
        raise ConfigError(f"unknown synthetic knob(s) {bad}; valid knobs: {', '.join(KNOB_DOCS)}")
    knobs = copy.deepcopy(PRESETS[preset])
    knobs.update(copy.deepcopy(overrides))
    return knobs


def knob_hash(knobs: dict, seed: int) -> str:
    """Names a generated dataset by its knobs and seed (stored as ``config_hash`` in its meta.json)."""
    return stable_hash({"preset": knobs, "seed": int(seed)}, "sha1")
