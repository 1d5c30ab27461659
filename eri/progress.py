"""What a multi-run tool (ablation tables, ensembles, searches) says while it works: one line per
finished unit with its time and an ETA, e.g. ``[3/18] row 'post-norm' seed 1: val 0.5069 (4m12s, ETA 52m)``.

The ETA is the mean time of the units trained so far times the units left: a unit read from the run
cache takes no time and is left out of the mean (else a rerun with 17 cached rows would promise the
18th in a second). No ETA is shown before the first trained unit finishes.
"""

from __future__ import annotations

import time


def duration(seconds: float) -> str:
    """``4m12s``, ``2h05m``, ``9s``: short enough for one progress line."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Units:
    """Counts ``total`` units; `done` returns (and prints through ``say``) the line of one finished unit."""

    def __init__(self, total: int, say=print):
        self.total, self.k, self.say = int(total), 0, say or (lambda *_: None)
        self.trained_s, self.trained = 0.0, 0
        self._t = time.perf_counter()

    def start(self) -> None:
        """Mark the start of the next unit (the time before it, e.g. reading configs, is not its)."""
        self._t = time.perf_counter()

    def eta(self) -> float | None:
        left = self.total - self.k
        if left <= 0 or not self.trained:
            return None
        return self.trained_s / self.trained * left

    def done(self, what: str, result: str, trained: bool = True, seconds: float | None = None,
             k: int | None = None) -> str:
        """One unit finished: ``trained`` False for a unit read from the cache (no time, not in the ETA).
        ``k``: its number when others count too (a study's trials finished by every worker)."""
        seconds = time.perf_counter() - self._t if seconds is None else seconds
        self.k = self.k + 1 if k is None else k
        if trained:
            self.trained_s += seconds
            self.trained += 1
        eta = self.eta()
        when = duration(seconds) if trained else "cached"
        line = f"[{self.k}/{self.total}] {what}: {result} ({when}" + (f", ETA {duration(eta)})" if eta is not None else ")")
        self.say(line)
        self.start()
        return line
