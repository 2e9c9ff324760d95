"""Training metrics: appended to metrics.jsonl and metrics.csv, and drawn to loss.png."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

FIELDS = ["split", "step", "epoch", "loss", "pred_loss", "sigreg_loss", "lr", "grad_norm", "images_per_s", "elapsed_s"]


class MetricsLog:
    """Append rows to OUT/metrics.jsonl and OUT/metrics.csv. On resume, rows past `resume_step` (logged
    after the checkpoint the run restarts from) are dropped so the curves do not double back."""

    def __init__(self, out: str | os.PathLike, resume_step: int | None = None):
        self.out = Path(out)
        self.jsonl, self.csv = self.out / "metrics.jsonl", self.out / "metrics.csv"
        rows = self.read() if resume_step is not None else []
        rows = [r for r in rows if r["step"] <= (resume_step or 0)]
        self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with open(self.csv, "w", newline="") as f:
            w = csv.DictWriter(f, FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    def read(self) -> list[dict]:
        if not self.jsonl.exists():
            return []
        rows = []
        for line in self.jsonl.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill
                pass
        return rows

    def log(self, row: dict) -> None:
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        with open(self.csv, "a", newline="") as f:
            csv.DictWriter(f, FIELDS, extrasaction="ignore").writerow(row)

    def plot(self) -> Path | None:
        """Draw train loss / pred loss / SIGReg (and val loss) against steps to OUT/loss.png."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.read()
        train = [r for r in rows if r["split"] == "train"]
        val = [r for r in rows if r["split"] == "val"]
        if not train:
            return None
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for ax, key, title in zip(axes, ("loss", "pred_loss", "sigreg_loss"), ("loss", "pred loss (MSE)", "SIGReg")):
            ax.plot([r["step"] for r in train], [r[key] for r in train], label="train", lw=1)
            if val:
                ax.plot([r["step"] for r in val], [r[key] for r in val], "o-", label="val", ms=3)
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[0].legend()
        fig.tight_layout()
        path = self.out / "loss.png"
        tmp = self.out / ".loss.png.tmp.png"
        fig.savefig(tmp, dpi=90)
        plt.close(fig)
        os.replace(tmp, path)
        return path
