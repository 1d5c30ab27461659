"""One figure per predicted video (paper 004, Fig. 2): the per-frame signals of each stream
(z-scored, the most varying columns; named classes such as expression probabilities as lines), the regression token's
attention over time in each branch with a ``gru_transformer`` encoder, and the 7 predicted intensities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from eri.constants import EMOTIONS
from eri.data.dataset import parse_stream
from eri.io import atomic_write_bytes
from eri.streams import StreamMeta


@torch.no_grad()
def token_attention(model, x: dict, lengths: dict) -> dict[str, np.ndarray]:
    """Per ``gru_transformer`` branch, (B, T) attention of its regression token over the steps."""
    attn = {}
    for name, branch in model.branches.items():
        if hasattr(branch.encoder, "token_attention"):
            feats, lens = branch.inputs(x, lengths)
            attn[name] = branch.encoder.token_attention(feats, lens).cpu().numpy()
    return attn


def _classes(meta, name: str) -> list:
    """The column names of a stream whose extractor names its output classes (metadata ``classes``)."""
    meta = meta if isinstance(meta, StreamMeta) else StreamMeta.from_dict(meta, name)
    classes = meta.extra.get("classes")
    return list(classes) if isinstance(classes, list) else []


def plot_video(
    path: Path, vid: str, feats: dict, times: dict, attn: dict, branch_streams: dict, pred, note: str, metas: dict
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = list(feats)
    rows = len(specs) + len(attn) + 1
    fig, axes = plt.subplots(rows, 1, figsize=(10, 1.9 * rows + 0.6), squeeze=False)
    axes = axes[:, 0]
    t_end = max([float(t[-1]) for t in times.values() if len(t)] + [1.0])
    for ax, spec in zip(axes, specs):
        f, t = np.asarray(feats[spec]), times[spec]
        name, _ = parse_stream(spec)
        if len(f) == 0:
            ax.text(0.5, 0.5, f"{spec}: no steps", ha="center", va="center", transform=ax.transAxes)
        elif f.shape[1] == len(classes := _classes(metas[name], name)):  # e.g. expression probabilities
            for j, c in enumerate(classes):
                ax.plot(t, f[:, j], label=c, lw=1)
            ax.legend(fontsize=6, ncol=7, loc="upper right")
        else:
            top = np.argsort(-f.std(0))[: min(24, f.shape[1])]
            z = (f[:, top] - f[:, top].mean(0)) / (f[:, top].std(0) + 1e-6)
            ax.imshow(
                z.T,
                aspect="auto",
                cmap="coolwarm",
                vmin=-3,
                vmax=3,
                interpolation="nearest",
                extent=(float(t[0]), float(t[-1]) if len(t) > 1 else float(t[0]) + 1e-3, len(top), 0),
            )
        ax.set_xlim(0, t_end)
        ax.set_ylabel(spec, fontsize=8)
    for ax, (branch, a) in zip(axes[len(specs) :], attn.items()):
        t = times[branch_streams[branch][0]]
        if len(a):
            ax.fill_between(t[: len(a)], a, step="mid", alpha=0.6)
        ax.set_xlim(0, t_end)
        ax.set_ylabel(f"attention\n{branch}", fontsize=8)
    axes[-2 if rows > 1 else 0].set_xlabel("time (s)")
    ax = axes[-1]
    ax.bar(range(7), pred, color="tab:orange")
    ax.set_xticks(range(7), EMOTIONS, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("predicted")
    fig.suptitle(f"{vid}" + (f"  ({note})" if note else ""), fontsize=9)
    fig.tight_layout()
    atomic_write_bytes(path, lambda fh: fig.savefig(fh, format="png", dpi=90))
    plt.close(fig)
