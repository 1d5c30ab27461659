"""Drawing a face-like image from AU intensities and valence/arousal (see `eri.mma.synthetic` for the
labels' semantics): shared by the MMA training sets (`eri.mma.synthetic`) and the synthetic ERI face
videos (`eri.data.synthetic.faces`), here so that neither `eri.data` nor `eri.mma` imports the other's
higher-level code (the MMA package already builds on `eri.data`)."""

from __future__ import annotations

import numpy as np

from eri.constants import AU_IDS

# ArcFace template in unit crop coordinates (x right, y down), as eri.features.faces uses it.
TEMPLATE = (
    np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]])
    / 112.0
)


def _seg_dist(x, y, x0, y0, x1, y1):
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-12), 0, 1)
    return np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))


def random_look(rng: np.random.Generator, canvas: int = 96, face: bool = True) -> dict:
    """The nuisances of one image: pose (``scale`` in canvas pixels per crop unit, ``angle`` in radians,
    ``centre`` in canvas pixels), ``background`` and ``skin`` RGB (what `render_face` draws when it gets none)."""
    look = {"scale": canvas * rng.uniform(0.55, 0.75), "angle": rng.uniform(-0.25, 0.25),
            "centre": canvas / 2 + rng.uniform(-0.08, 0.08, 2) * canvas, "background": rng.uniform(40, 200, 3)}
    if face:
        look["skin"] = np.array([rng.uniform(150, 235), rng.uniform(110, 180), rng.uniform(80, 150)])
    return look


def render_face(rng: np.random.Generator, au: np.ndarray, va: np.ndarray, canvas: int = 96, face: bool = True,
                look: dict | None = None, cues: dict | None = None, noise: float = 6.0):
    """One image: (canvas, canvas, 3) uint8 and the 5 landmarks (5, 2) in canvas pixels.

    ``au`` holds the 17 intensities in AU_IDS order. With ``face=False`` only background (AffectNet's
    "no face" rows). ``look``: pose and colours (`random_look`; drawn from ``rng`` when None), so a video
    can hold them steady or drift them. ``cues``: facial signs no MMA head names, for the face videos of
    `eri.data.synthetic.faces`: ``tears`` (0-1: streaks from the lower lids down the cheeks) and ``gaze``
    ((dx, dy) in [-1, 1]: the pupils turned away). ``noise``: sd of the pixel noise."""
    a = dict(zip(AU_IDS, au))
    val, aro = va
    look = random_look(rng, canvas, face) if look is None else look
    scale, angle, centre = look["scale"], look["angle"], np.asarray(look["centre"], float)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]]) * scale  # aligned-crop unit -> canvas pixels
    offset = centre - rot @ np.array([0.5, 0.55])

    ys, xs = np.mgrid[0:canvas, 0:canvas].astype(np.float64) + 0.5
    inv = np.linalg.inv(rot)
    u = inv[0, 0] * (xs - offset[0]) + inv[0, 1] * (ys - offset[1])
    v = inv[1, 0] * (xs - offset[0]) + inv[1, 1] * (ys - offset[1])

    img = np.empty((canvas, canvas, 3))
    img[:] = look["background"]
    if face:
        skin = np.asarray(look["skin"], float)
        dark = skin * 0.25

        def paint(mask, colour, alpha=1.0):
            m = np.clip(mask, 0, 1)[..., None] * alpha
            img[:] = img * (1 - m) + np.asarray(colour) * m

        soft = lambda d, w: np.clip((w - d) / 0.012 + 0.5, 0, 1)  # noqa: E731  anti-aliased band of half-width w
        paint(soft(np.hypot((u - 0.5) / 0.40, (v - 0.58) / 0.52) - 1, 0.0), skin)
        # cheeks (AU6)
        for cx in (0.27, 0.73):
            paint(soft(np.hypot(u - cx, v - 0.70), 0.07), (220, 80, 80), 0.6 * a[6])
        # eyes: openness from AU5 (wide), AU7 (squint), arousal
        half_h = np.clip(0.022 + 0.03 * a[5] - 0.015 * a[7] + 0.008 * aro, 0.006, 0.07)
        gaze = np.asarray((cues or {}).get("gaze", (0.0, 0.0)), float) * (0.035, 0.6 * half_h)
        for ex, ey in TEMPLATE[:2]:
            paint(soft(np.hypot((u - ex) / 0.065, (v - ey) / half_h) - 1, 0.0), (255, 255, 255))
            paint(soft(np.hypot(u - ex - gaze[0], v - ey - gaze[1]), min(0.02, half_h)), (30, 30, 60))
        # brows: height from AU1/AU2 (raise), AU4 (lower), arousal; inner end from AU1 up / AU4 down
        base = 0.105 + 0.035 * (a[1] + a[2]) / 2 - 0.03 * a[4] + 0.01 * aro
        for side, (ex, ey) in zip((-1, 1), TEMPLATE[:2]):
            inner_x, outer_x = ex - side * 0.07, ex + side * 0.08
            inner_y = ey - base - 0.03 * a[1] + 0.035 * a[4]
            outer_y = ey - base - 0.03 * a[2]
            paint(soft(_seg_dist(u, v, inner_x, inner_y, outer_x, outer_y), 0.014), dark)
        # frown line between the brows (AU4), nose wrinkle (AU9)
        paint(soft(_seg_dist(u, v, 0.5, 0.36, 0.5, 0.43), 0.006), dark, a[4])
        for dy in (0.0, 0.025):
            paint(soft(_seg_dist(u, v, 0.45, 0.55 + dy, 0.55, 0.55 + dy), 0.006), dark, a[9])
        # nose tip
        paint(soft(np.hypot(u - TEMPLATE[2, 0], v - TEMPLATE[2, 1]), 0.025), skin * 0.8)
        # nasolabial lines (AU11)
        for side in (-1, 1):
            paint(soft(_seg_dist(u, v, 0.5 + side * 0.07, 0.66, 0.5 + side * 0.16, 0.80), 0.006), dark, a[11])
        # mouth: corners up (AU12, valence) / down (AU15), width (AU20 wider, AU23 narrower), opening (AU25, AU26)
        my = (TEMPLATE[3, 1] + TEMPLATE[4, 1]) / 2
        half_w = 0.12 + 0.05 * a[20] - 0.04 * a[23]
        bend = -0.06 * a[12] + 0.06 * a[15] - 0.03 * val  # corner height relative to centre (up is negative)
        t = np.clip((u - 0.5) / half_w, -1.5, 1.5)
        centre_line = my - 0.02 * a[10] + bend * t**2
        opening = 0.006 + 0.025 * a[25] + 0.04 * a[26]
        inside = (np.abs(t) <= 1) & (np.abs(v - centre_line) <= opening)
        lip = np.clip(1 - np.abs(np.abs(v - centre_line) - opening) / 0.012, 0, 1) * (np.abs(t) <= 1.05)
        paint(lip, np.array((170, 60, 70)) * (1 - 0.6 * a[24]))
        paint(inside.astype(float), (40, 10, 20))
        paint(inside & (v < centre_line - opening + 0.02 * a[10] + 0.004), (245, 245, 235), a[10])  # teeth
        # chin bump (AU17)
        paint(soft(_seg_dist(u, v, 0.44, 0.93, 0.56, 0.93), 0.01), skin * 0.7, a[17])
        if cues and cues.get("tears", 0) > 0:  # wet streaks from the lower lids down the cheeks
            for ex, ey in TEMPLATE[:2]:
                streak = soft(_seg_dist(u, v, ex + 0.01, ey + half_h, ex + 0.03, ey + 0.2), 0.012)
                paint(streak, (150, 200, 255), min(float(cues["tears"]), 1.0))
    img += rng.normal(0, noise, img.shape)
    lm = (rot @ TEMPLATE.T).T + offset
    return np.clip(img, 0, 255).round().astype(np.uint8), lm
