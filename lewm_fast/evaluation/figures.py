"""Figures of the evaluation and the surprise test (matplotlib, Agg backend, written as PNG)."""

from __future__ import annotations

import os

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def frame_grid(
    path: str | os.PathLike,
    starts: list[np.ndarray],
    goals: list[np.ndarray],
    finals: list[np.ndarray | None],
    success: list[bool],
    per_row: int = 5,
    title: str = "",
) -> None:
    """A PNG of (start, goal, final) frame triplets, one per episode, `per_row` triplets per row; the
    final frame is framed green on success, red on failure. Frames: uint8 (S, S, 3); None = blank."""
    plt = _plt()
    n = len(starts)
    rows = max(1, -(-n // per_row))
    cols = 3 * min(per_row, max(n, 1))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 1.05 + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, per_row)
        blank = np.full_like(starts[i], 128)
        for k, (img, name) in enumerate(((starts[i], "start"), (goals[i], "goal"), (finals[i], "final"))):
            ax = axes[r, 3 * c + k]
            ax.imshow(blank if img is None else img)
            ax.set_title(f"{i}: {name}" if k == 0 else name, fontsize=6, pad=2)
            if k == 2:
                ax.axis("on")
                ax.set_xticks([]), ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_color("tab:green" if success[i] else "tab:red")
                    spine.set_linewidth(2.5)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def surprise_plot(
    path: str | os.PathLike,
    curves: dict[str, np.ndarray],
    perturb_frame: int,
    frameskip: int,
    title: str = "",
    pvalues: dict[str, float] | None = None,
) -> None:
    """Mean surprise (with a standard-error band) over time per condition. curves: name -> (N, K)
    surprise of frame k (NaN where undefined, e.g. frame 0); perturb_frame: the first perturbed frame."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    colors = {"unperturbed": "tab:gray", "colour": "tab:blue", "teleport": "tab:red"}
    means = np.concatenate([np.nanmean(s[:, 1:], axis=0) for s in curves.values()])  # frame 0: NaN
    means = means[np.isfinite(means) & (means > 0)]
    log = means.size > 0 and means.max() / means.min() > 100  # conditions orders of magnitude apart
    for name, s in curves.items():
        defined = ~np.isnan(s).all(axis=0)  # frame 0 has no prediction
        k = np.arange(s.shape[1])[defined] * frameskip
        s = s[:, defined]
        mean = s.mean(axis=0)
        se = s.std(axis=0, ddof=1) / np.sqrt(s.shape[0]) if s.shape[0] > 1 else np.zeros_like(mean)
        label = name if not pvalues or name not in pvalues else f"{name} (p = {pvalues[name]:.2g})"
        ax.plot(k, mean, marker="o", ms=3, label=label, color=colors.get(name))
        low = np.maximum(mean - se, mean / 10) if log else mean - se  # a band above 0 on a log axis
        ax.fill_between(k, low, mean + se, alpha=0.2, color=colors.get(name))
    if log:
        ax.set_yscale("log")
    ax.axvline(perturb_frame * frameskip, color="k", ls="--", lw=1)
    ax.text(perturb_frame * frameskip, ax.get_ylim()[1], " perturbation", va="top", fontsize=8)
    ax.set_xlabel("environment step")
    ax.set_ylabel("surprise: |predicted - observed embedding|^2")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
