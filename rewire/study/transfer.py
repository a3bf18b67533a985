"""The controlled-language question: does a forgetting body carry a larger share of its English task over?

A controlled language (`config.controlled`) is the pretraining language met through a fresh tokenizer and
fresh embeddings: relearned as it is, or enciphered (`rewire.data.cipher`). It is tested on the English
test items (enciphered alike), so the English task model's own test accuracy is the ceiling of its
zero-shot accuracy, and nothing but the new embeddings stands between the two. Per model (variant, seed)
the transfer ratio is zero-shot accuracy as a percentage of that ceiling (`tasks.scoring.transfer_ratio`);
the chance-corrected ratio measures both from chance (0 at chance, 100 at the ceiling), since the plain
ratio already reads chance/ceiling for a model that transfers nothing. Per variant and budget: the mean
and t-interval over seeds; each compared variant - standard: a seed bootstrap (each variant's seeds
resampled).
"""

from __future__ import annotations

import math

from rewire.config.variants import BASELINE, compared
from rewire.plot import panels, save, style
from rewire.probe import stats as probe_stats
from rewire.probe.report import fmt
from rewire.study import layout as L
from rewire.tasks.scoring import transfer_ratio

COLORS = {"standard": "tab:blue", "forget": "tab:red", "weight_decay": "tab:green"}


def chance_accuracy(finetune_cfg) -> float:
  """The accuracy (%) of a uniform guess on the study's task: 1/classes (its bundled tasks are balanced)."""
  if finetune_cfg.task == "classify":
    return 100.0 / len(finetune_cfg.label_names)
  return 100.0 / 3 if finetune_cfg.task == "nli" else 0.0


def difference(per_seed: dict, *, resamples: int, level: float, variant: str = "forget") -> dict:
  """Seed-bootstrap interval of mean(variant) - mean(standard); `per_seed[v]` is a list over seeds."""
  r = probe_stats.bootstrap(lambda g: g[variant].mean(axis=-1) - g[BASELINE].mean(axis=-1),
                            {v: per_seed[v] for v in (variant, BASELINE)}, resamples=resamples, level=level)
  return {"mean": r["estimate"], "low": r["low"], "high": r["high"], "resamples": r["resamples"]}


def compute_transfer(models: dict, config, seeds, budgets, level: float) -> dict:
  """{"chance", "languages", language: {budget: {variant: {...}, "difference": {variant: ...}, ...}}} for the
  controlled languages; `models[(variant, seed)]["zero_shot"]` holds each model's zero-shot results."""
  chance = chance_accuracy(config.finetune)
  variants = list(config.variants)
  by_language = L.controlled(config)
  names = L.curves(config, by_language)
  sources = {n: by_language[L.language_of(n)] for n in names}
  out = {"chance": chance, "languages": names, "sources": sources, "variants": variants}
  # The ceiling: each task model's English test accuracy, the same at every language and budget.
  ceiling = {v: [models[(v, s)]["zero_shot"]["en"]["full"]["accuracy"] for s in seeds] for v in variants}
  for name in names:
    per_budget = {}
    for b in budgets:
      if any(b not in models[(v, s)]["zero_shot"].get(name, {}) for v in variants for s in seeds):
        continue
      acc = {v: [models[(v, s)]["zero_shot"][name][b]["accuracy"] for s in seeds] for v in variants}
      ratio = {v: [transfer_ratio(z, e) for z, e in zip(acc[v], ceiling[v])] for v in variants}
      # Undefined (NaN, left out of the means) for a task model at or below chance: nothing to transfer.
      above = {v: [transfer_ratio(z, e, chance=chance) if e > chance else math.nan
                   for z, e in zip(acc[v], ceiling[v])] for v in variants}
      row = {v: {"zero_shot": probe_stats.mean_ci(acc[v], level), "ceiling": probe_stats.mean_ci(ceiling[v], level),
                 "ratio": probe_stats.mean_ci(ratio[v], level),
                 "ratio_above_chance": probe_stats.mean_ci(above[v], level), "per_seed_ratio": ratio[v]}
             for v in variants}
      for key, per_seed in (("difference", ratio), ("difference_above_chance", above)):
        row[key] = {v: difference(per_seed, resamples=int(config.bootstrap), level=level, variant=v)
                    for v in compared(variants)}
      per_budget[b] = row
    out[name] = per_budget
  return out


def plot_transfer(transfer: dict, path: str) -> str | None:
  """Transfer ratio against the adaptation budget, one panel per controlled language, a band per variant."""
  names = [n for n in transfer["languages"] if transfer[n]]
  if not names:
    return None
  fig, axes = panels(len(names), width=4.2, height=3.4)
  for ax, name in zip(axes, names):
    budgets = sorted(transfer[name], key=int)
    x = [int(b) for b in budgets]
    for v in transfer["variants"]:
      r = [transfer[name][b][v]["ratio"] for b in budgets]
      ax.plot(x, [s["mean"] for s in r], "o-", color=COLORS[v], label=v)
      ax.fill_between(x, [s["low"] for s in r], [s["high"] for s in r], color=COLORS[v], alpha=0.18, lw=0)
      ceiling = transfer[name][budgets[0]][v]["ceiling"]["mean"]  # the same task models at every budget
      ax.axhline(100.0 * transfer["chance"] / ceiling, color=COLORS[v], ls=":", lw=0.9, label=f"chance ({v})")
    ax.axhline(100.0, color="gray", ls="--", lw=0.8, label="English ceiling")
    ax.set_xscale("log")
    ax.set_xticks(x, [f"{b:,}" for b in x])
    ax.tick_params(axis="x", which="minor", labelbottom=False)
    style(ax, "adaptation token budget", "zero-shot / English test accuracy (%)", f"transfer ratio: {name}")
  return save(fig, path)


def _diff(d: dict) -> str:
  if math.isnan(d["mean"]):
    return "—"  # undefined: a task model at or below chance
  return f"{d['mean']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]"


def transfer_lines(transfer: dict, adapt_steps: int, level: int) -> list[str]:
  """The report's section on the controlled languages (empty when the study has none)."""
  names = [n for n in transfer["languages"] if transfer[n]]
  if not names:
    return []
  variants = transfer["variants"]
  others = compared(variants)
  diffs = [f"{v} - {BASELINE}" for v in others]
  head = (["language", "budget"] + [f"zero-shot {v}" for v in variants] + [f"ratio {v}" for v in variants] + diffs
          + [f"above chance {v}" for v in variants] + diffs)
  lines = [
      "## Controlled languages: the share of the English task that transfers", "",
      "Each controlled language is English met through a fresh tokenizer and fresh embeddings (adapted on "
      f"the budget's tokens for {adapt_steps:,} updates, body frozen), tested on the English test items: "
      + "; ".join(f"`{lang}` = `{source}`" for lang, source in
                  {L.language_of(n): transfer["sources"][n] for n in names}.items()) + ". The transfer ratio is zero-shot "
      "accuracy as a percentage of the same task model's English test accuracy; 'above chance' measures both "
      f"from chance ({transfer['chance']:.0f}%), so 0 is chance and 100 the ceiling. ± is a {level}% t-interval "
      f"over seeds; each variant - {BASELINE} is in ratio points with a {level}% seed-bootstrap interval.", "",
      "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name in names:
    for b in sorted(transfer[name], key=int):
      r = transfer[name][b]
      cells = ([name, f"{int(b):,}"] + [fmt(r[v]["zero_shot"], 1) for v in variants]
               + [fmt(r[v]["ratio"], 1) for v in variants] + [_diff(r["difference"][v]) for v in others]
               + [fmt(r[v]["ratio_above_chance"], 1) for v in variants]
               + [_diff(r["difference_above_chance"][v]) for v in others])
      lines.append("| " + " | ".join(cells) + " |")
  return lines + ["", "![transfer ratio against budget](transfer.png)", ""]
