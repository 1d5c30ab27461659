"""How long combining takes at Hume-Reaction's size: 20 members' predictions on a fit set of the
val split (4,657 videos) or of the train + val fold pool (20,463), and the 4,604 test videos. Each
combiner is cross-fitted (5 parts) and fitted once more on the whole fit set, then scored with 1,000
bootstrap resamples; the predictions are random (the timing does not depend on them)."""

from __future__ import annotations

import time

import numpy as np

HUME = {"val": 4657, "pool": 15806 + 4657, "test": 4604}


def combine_timing(members: int = 20, fit: str = "val", seed: int = 0, progress=print) -> list[dict]:
    from eri.ensembles.combiners import COMBINERS, Combination
    from eri.training.metrics import bootstrap_ci

    rng = np.random.default_rng(seed)
    n, nt = HUME[fit], HUME["test"]
    y, yt = rng.uniform(size=(n, 7)), rng.uniform(size=(nt, 7))
    x = np.clip(y[None] + rng.normal(0, 0.5, (members, n, 7)), 0, 1)
    xt = np.clip(yt[None] + rng.normal(0, 0.5, (members, nt, 7)), 0, 1)
    rows = []
    for name in COMBINERS:
        t = time.perf_counter()
        held, test = Combination(name).fit(x, y, xt)
        t_fit = time.perf_counter() - t
        t = time.perf_counter()
        bootstrap_ci(held, y), bootstrap_ci(test, yt)
        t_ci = time.perf_counter() - t
        rows.append({"combiner": name, "members": members, "fit_videos": n, "test_videos": nt,
                     "cross_fit_and_final_s": round(t_fit, 3), "bootstrap_ci_s": round(t_ci, 3)})
        if progress:
            progress(f"  {name:<8} {members} members, fit {n} / test {nt} videos: combine {t_fit:.2f} s, CIs {t_ci:.2f} s")
    return rows
