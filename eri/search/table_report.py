"""How an ablation table is written (`eri.search.ablate` trains it): ``table.md`` with the note under it
(which differences from the reference row are established and which are noise), ``table.csv`` (every
number), ``table.tex`` and ``bar.png``. Significance: * where the paired 95% interval excludes 0."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from eri.io import atomic_write_bytes, atomic_write_text


def _fmt(m: float, s: float, n: int) -> str:
    if n == 0 or math.isnan(m):
        return "failed"
    return f"{m:.4f}" if n == 1 else f"{m:.4f} ± {s:.4f}"


def write_table(table, results: list[dict], folder: Path, preset: str, seeds: int, extra: list[str]) -> None:
    import pandas as pd
    from tabulate import tabulate

    folder.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(results)
    atomic_write_text(folder / "table.csv", df.to_csv(index=False, float_format="%.6f"))
    head = ["row", "paper val", f"val mean PCC ({seeds} seed{'s' * (seeds > 1)})", "test mean PCC",
            "test vs reference, 95% CI"]
    body = [
        [
            r["row"] + (" (reference)" if r["row"] == table.reference else ""),
            "" if r["paper_val"] is None else f"{r['paper_val']:.3f}",
            _fmt(r["val_mean"], r["val_std"], r["seeds"]),
            _fmt(r["test_mean"], r["test_std"], r["seeds"]),
            f"{r['test_diff']:+.4f} [{r['test_diff_lo']:+.4f}, {r['test_diff_hi']:+.4f}]" + (" *" if r["test_diff_excludes_0"] else "")
            if r.get("test_diff") is not None else "",
        ]
        for r in results
    ]
    note = (f"preset `{preset}`, seeds 0..{seeds - 1}" + (f", overrides `{' '.join(extra)}`" if extra else "")
            + "; mean ± std over seeds; the last column is each row minus the reference row in test mean PCC "
            "(val chose each run's epoch; test chose nothing), paired bootstrap over the same videos (1000 "
            "resamples, PCCs averaged over the seeds, paired by seed); * the interval excludes 0")
    grid = tabulate(body, head, tablefmt="github", colalign=("left", "right", "right", "right", "right"), disable_numparse=True)
    md = f"### {table.title}\n\n{grid}\n\n"
    md += f"{note}. Paper: {table.claim}.\n\n{verdict(table, results)}\n"
    atomic_write_text(folder / "table.md", md)

    def esc(s) -> str:
        return str(s).replace("&", r"\&").replace("%", r"\%").replace("_", r"\_").replace("±", r"$\pm$")

    tex = ["\\begin{tabular}{lrrrr}", "\\hline", " & ".join(map(esc, head)) + " \\\\", "\\hline"]
    tex += [" & ".join(map(esc, r)) + " \\\\" for r in body] + ["\\hline", "\\end{tabular}", ""]
    atomic_write_text(folder / "table.tex", f"% {table.title}; {note}\n" + "\n".join(tex))
    _bar_chart(table, df, folder / "bar.png")


def verdict(table, results: list[dict]) -> str:
    """Which differences from the reference row hold (interval excludes 0) and which are noise, in words."""
    diffs = [r for r in results if r.get("test_diff") is not None]
    if not diffs:
        return "No row was compared with the reference (no test scores)."
    better = [r["row"] for r in diffs if r["test_diff_excludes_0"] and r["test_diff"] > 0]
    worse = [r["row"] for r in diffs if r["test_diff_excludes_0"] and r["test_diff"] < 0]
    noise = [r["row"] for r in diffs if not r["test_diff_excludes_0"]]
    parts = [f"better (established): {'; '.join(better)}" if better else "",
             f"worse (established): {'; '.join(worse)}" if worse else "",
             f"within the noise, no difference established: {'; '.join(noise)}" if noise else ""]
    return f"Against the reference ({table.reference}), test, paired 95% CI: " + ". ".join(p for p in parts if p) + "."


def _bar_chart(table, df, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.arange(len(df))
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(df) + 1.2))
    ax.barh(y, df["val_mean"].fillna(0), xerr=df["val_std"].fillna(0), color="tab:blue", alpha=0.8,
            label="val mean PCC (ours)")
    paper = df["paper_val"].astype(float)
    if paper.notna().any():
        ax.scatter(paper, y, color="tab:red", marker="D", zorder=3, label="paper (val, real data)")
    ax.set_yticks(y, df["row"])
    ax.invert_yaxis()
    ax.set_xlabel("mean PCC")
    ax.set_title(table.title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
