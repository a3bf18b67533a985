"""The loss-curve PNG: training and validation MLM loss against updates, with every reset marked."""

from __future__ import annotations

import os

from rewire.telemetry import read_records


def plot_losses(metrics_path: str, out_path: str, *, title: str = "") -> str | None:
  """Draws `metrics.jsonl` into `out_path`; returns the path, or None if there is nothing to draw."""
  records = read_records(metrics_path)
  train = [(r["step"], r["loss"]) for r in records if "loss" in r and "event" not in r]
  valid = [(r["step"], r["valid_loss"]) for r in records if "valid_loss" in r]
  resets = [r["step"] for r in records if r.get("event") == "forget"]
  baseline = next((r["unigram_loss"] for r in records if "unigram_loss" in r), None)
  if not train and not valid:
    return None

  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
  for i, s in enumerate(resets):
    ax.axvline(s, color="tab:red", alpha=0.35, lw=1, ls="--", label="embedding reset" if i == 0 else None)
  if train:
    ax.plot(*zip(*train), color="tab:blue", lw=1.2, label="train MLM loss")
  if valid:
    ax.plot(*zip(*valid), "o-", color="tab:orange", ms=4, lw=1.2, label="validation MLM loss")
  if baseline is not None:
    ax.axhline(baseline, color="gray", lw=1, ls=":", label="unigram baseline")
  ax.set_xlabel("update")
  ax.set_ylabel("MLM loss (nats)")
  ax.set_title(title or os.path.basename(os.path.dirname(os.path.abspath(metrics_path))))
  ax.grid(alpha=0.3)
  ax.legend(loc="upper right", fontsize=8)
  fig.tight_layout()
  tmp = out_path + ".tmp.png"
  fig.savefig(tmp)
  plt.close(fig)
  os.replace(tmp, out_path)
  return out_path
