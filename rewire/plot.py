"""Figures: the loss-curve PNG of a run (training and validation LM loss, every reset marked), and the
few helpers every rewire figure is drawn with (Agg backend, one row of panels, common styling, atomic save)."""

from __future__ import annotations

import os

from rewire.telemetry import read_records


def panels(n: int = 1, *, width: float = 4.5, height: float = 3.5):
  """A figure with one row of `n` panels; returns (figure, list of axes)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, n, figsize=(width * n, height), dpi=110, squeeze=False)
  return fig, list(axes[0])


def style(ax, xlabel: str, ylabel: str, title: str | None = None, *, legend: str | None = "best") -> None:
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  if legend:
    ax.legend(loc=legend, fontsize=8)


def save(fig, path: str) -> str:
  """Lays out, writes atomically (a reader never sees half a PNG) and closes `fig`; returns `path`."""
  import matplotlib.pyplot as plt
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp)
  plt.close(fig)
  os.replace(tmp, path)
  return path


def plot_losses(metrics_path: str, out_path: str, *, title: str = "") -> str | None:
  """Draws `metrics.jsonl` into `out_path`; returns the path, or None if there is nothing to draw."""
  records = read_records(metrics_path)
  train = [(r["step"], r["loss"]) for r in records if "loss" in r and "event" not in r]
  valid = [(r["step"], r["valid_loss"]) for r in records if "valid_loss" in r]
  resets = [r["step"] for r in records if r.get("event") == "forget"]
  baseline = next((r["unigram_loss"] for r in records if "unigram_loss" in r), None)
  if not train and not valid:
    return None

  fig, (ax,) = panels(width=9, height=4.5)
  for i, s in enumerate(resets):
    ax.axvline(s, color="tab:red", alpha=0.35, lw=1, ls="--", label="embedding reset" if i == 0 else None)
  if train:
    ax.plot(*zip(*train), color="tab:blue", lw=1.2, label="train LM loss")
  if valid:
    ax.plot(*zip(*valid), "o-", color="tab:orange", ms=4, lw=1.2, label="validation LM loss")
  if baseline is not None:
    ax.axhline(baseline, color="gray", lw=1, ls=":", label="unigram baseline")
  style(ax, "update", "LM loss (nats)", title or os.path.basename(os.path.dirname(os.path.abspath(metrics_path))),
        legend="upper right")
  return save(fig, out_path)
