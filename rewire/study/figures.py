"""The study report's figures: pretraining curves, adaptation curves, zero-shot accuracy and transfer ratio
against the adaptation budget. They draw what `rewire.study.statistics` computed; nothing here is a statistic.
"""

from __future__ import annotations

import os

from rewire.config.variants import BASELINE
from rewire.plot import panels, save, style
from rewire.probe.report import plot_curves
from rewire.study import layout as L
from rewire.study.transfer import COLORS, plot_transfer


def plot_pretraining(curves: dict, unigram: float, path: str, loss_name: str = "MLM") -> None:
  """Every model's English validation loss against the update (`curves` by model name), and the unigram line."""
  fig, (ax,) = panels(width=6, height=3.6)
  for name, points in curves.items():
    if points:
      variant = L.variant_of(name)
      label = variant if name == L.model_name(variant, 0) else None  # one legend entry per variant
      ax.plot(*zip(*points), color=COLORS[variant], alpha=0.7, label=label)
  ax.axhline(unigram, color="gray", ls="--", lw=0.8, label="unigram")
  style(ax, "pretraining update", f"English validation {loss_name} loss (nats)")
  save(fig, path)


def plot_zero_shot_budgets(stats: dict, path: str) -> None:
  """Zero-shot accuracy (mean and t-interval) against the adaptation budget, one panel per language."""
  languages, budgets = stats["languages"], [str(b) for b in stats["budgets"]]
  fig, axes = panels(len(languages), width=3.8, height=3.3)
  for ax, lang in zip(axes, languages):
    for variant in stats["variants"]:
      per_budget = stats["zero_shot"][variant]
      adapted = [budget for budget in budgets if lang in per_budget[budget]]
      accuracy = [per_budget[budget][lang] for budget in adapted]
      ax.errorbar([int(b) for b in adapted], [a["mean"] for a in accuracy], yerr=[a["half_width"] for a in accuracy],
                  color=COLORS[variant], marker="o", capsize=3, label=variant)
    ax.set_xscale("log")
    style(ax, "adaptation token budget", "accuracy (%)", f"zero-shot {lang}")
  save(fig, path)


def write_figures(root: str, stats: dict, probes: dict, curves: dict, loss_name: str) -> None:
  """pretraining.png, adaptation.png, zero_shot.png and transfer.png under `root`."""
  plot_pretraining(curves, stats["pretrain"][BASELINE]["unigram_loss"], os.path.join(root, "pretraining.png"),
                   loss_name)
  plot_curves(probes, os.path.join(root, "adaptation.png"), colors=COLORS)
  plot_zero_shot_budgets(stats, os.path.join(root, "zero_shot.png"))
  plot_transfer(stats["transfer"], os.path.join(root, "transfer.png"))
