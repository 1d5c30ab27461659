"""A synthetic Hume-Reaction-like dataset, written in exactly the layout real feature extraction writes.

Why it exists: the real data cannot be shipped, yet every part of ``eri`` (loading, batching with masks,
the per-stream encoders, fusion, the metric) must be exercised end to end, in tests and in the demo,
on data whose difficulties are the real ones. The generator therefore reproduces:

* **Labels** with the published statistics of Hume-Reaction (DESIGN.md "Dataset layouts"): values in
  [0, 1], each row's maximum exactly 1.0, about half of the rows holding a 0, train means near
  .32/.61/.35/.24/.21/.29/.53, Anxiety-Fear r ~ .73. A correlated log-normal latent gives per-video
  intensities ``u``; the *noiseless target* is ``y = u / max(u)``; the *label* is a noisy self-report of
  ``u`` (correlated report noise in log space, so raters confuse Anxiety and Fear) rescaled by its row
  maximum. The report noise caps what any model can reach: the **ceiling** (mean over emotions of the
  Pearson r between ``y`` and the labels) is recorded per split in ``synthetic.json``.
* **Sparse events**: emotion ``e`` shows as short bumps (``event_dur_min``..``event_dur_max`` s) on a neutral
  background. The bump *peak* carries the intensity (``~ y_e`` times a small per-stream jitter) while the
  number and the durations of the events are random and independent of the intensity, so averaging all
  frames dilutes and confounds the signal; a model that finds peaks does clearly better.
* **Complementary streams**: each stream sees each emotion with its own visibility, its own per-event
  amplitude jitter (independent across streams, so fusion averages it out), its own mixing and noise.
  No stream sees every emotion well: ``mma``, a basic-expression and AU model, sees Adoration, Anxiety
  and Empathic-Pain only weakly (no basic expression stands for them), AUs see the negative emotions,
  the holistic embedding Adoration, Amusement, Disgust and Surprise, audio Amusement, Fear and
  Surprise. So fusing streams beats any single one, as on the real task (paper 004, Table 2).
* **Nuisances**: talking (audio, mouth AUs 10/25/26, holistic), head motion (holistic), per-subject
  static offsets (identity; holistic, audio, AU baselines), frames without a face in short bursts (their
  features are garbage or zeros and ``valid`` is False) and about 1% of videos with < 50 valid frames.
* **Subject-disjoint splits** with many videos per subject.

Semantics where cheap: emotions drive the 7 basic expressions (Amusement/Adoration -> happiness,
Disgust -> disgust, Fear/Anxiety -> fear, Surprise -> surprise, Empathic-Pain -> sadness), and the
expressions drive the 17 AUs through the expression-AU table of DESIGN.md (plus a few emotion-specific
AUs so that e.g. Anxiety and Fear are not identical in AU space).

Determinism and resuming: the plan (splits, subjects, labels, durations) comes from global RNGs seeded by
``seed``; each video's arrays come from ``np.random.default_rng([seed, video_index])`` and the subject's
own RNG, so an interrupted run re-run with the same arguments skips the videos already written and ends
with byte-identical files (the store writes its zip containers with fixed timestamps).
``synthetic.json`` is written last and marks a complete dataset. Synthetic data is opt-in and never
overwrites a user's data: the generator writes only into a new or empty folder, its first file a
marker (``.eri-synthetic.json``) that lets it resume there; any other folder is refused (`claim`).

Face videos: the ``*-faces`` presets (``tiny-faces``, ``small-faces``) draw the same plan and event timelines
as faces (`eri.mma.synthetic`'s drawing) and write videos, not features, with cues no MMA head names
(`faces`): data for end-to-end training, which must beat a frozen MMA model there.

Modules: `knobs` (presets, what each knob means), `labels`, `generator` (the plan, one video, the writer),
`timeline` (one video's events and nuisances, shared by both), `faces` (face videos), `drawing` (a face
from AUs and valence/arousal), `claim` (which folders a generator may write into),
`calibration` (the linear-probe check). Entry points: :func:`generate`, :func:`ensure_synthetic`, :func:`sample_labels`, :func:`proxy_scores`;
command line: ``tools/make_synthetic.py``.
"""

from eri.data.synthetic.calibration import pooled_features, proxy_scores, ridge_score
from eri.data.synthetic.generator import ensure_synthetic, generate
from eri.data.synthetic.knobs import (
    ALL_STREAMS, FACE_KNOB_DOCS, FACE_KNOBS, GENERATOR_VERSION, KNOB_DOCS, PRESETS, knob_hash, resolve_preset,
)
from eri.data.synthetic.labels import label_stats, mean_pearson, sample_labels

__all__ = [
    "ALL_STREAMS", "FACE_KNOB_DOCS", "FACE_KNOBS", "GENERATOR_VERSION", "KNOB_DOCS", "PRESETS", "ensure_synthetic", "generate", "knob_hash",
    "label_stats", "mean_pearson", "pooled_features", "proxy_scores", "resolve_preset", "ridge_score", "sample_labels",
]
