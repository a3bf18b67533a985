"""What a probe writes for people: `probe.md` (a table per budget) and `probe.png` (curves with bands, a line
style per budget), and `plasticity.png`, plasticity against pretraining updates for the probes a
pretraining run takes."""

from __future__ import annotations

import math
import os

from rewire.plot import panels, save, style


def fmt(stat: dict, digits: int = 3) -> str:
  """'5.123 ± 0.045' (the t-interval's half-width), or '—' where no value exists."""
  m = stat.get("mean")
  if m is None or (isinstance(m, float) and math.isnan(m)):
    return "—"
  h = stat.get("half_width", 0.0)
  return f"{m:.{digits}f} ± {h:.{digits}f}" if h and not math.isnan(h) else f"{m:.{digits}f}"


def rows_text(r: dict) -> str:
  """A start's new rows, 'copied / mixed / random', or '—' for the paper's random draw."""
  rows = r.get("rows")
  return f"{rows['copied']:,} / {rows['mixed']:,} / {rows['random']:,}" if rows else "—"


def table_lines(results: dict, budget: str) -> list[str]:
  starts = any("rows" in per.get(budget, {}) for per in results.values())
  head = "| language/start | rows copied / mixed / random " if starts else "| language "
  lines = [head + "| unigram | target | final loss | AUC (mean loss) | updates to target | reached |",
           "|---|" + ("---|" if starts else "") + "---|---|---|---|---|---|"]
  for curve, per in results.items():
    r = per.get(budget)
    if r is None:
      continue
    lines.append(f"| {curve} | " + (f"{rows_text(r)} | " if starts else "") +
                 f"{r['unigram_loss']:.3f} | {r['target_loss']:.3f} | {fmt(r['final_loss'])} | "
                 f"{fmt(r['auc'])} | {fmt(r['updates_to_target'], 0)} | {r['reached_target']}/{r['seeds']} |")
  return lines


def start_text(inits) -> str:
  if list(inits) == ["random"]:
    return "fresh N(0, 0.02) embeddings"
  return (f"embeddings started by each of {', '.join(inits)} (a row per language/start; random is the paper's "
          "N(0, 0.02), every other start builds rows from the body's own, and all starts of a seed share its "
          "batches, masking and dropout)")


def write_report(out: dict, workdir: str) -> None:
  level = int(round(100 * out["confidence"]))
  lines = ["# Plasticity probe", "",
           f"Body: `{out['init_from']}` at step {out['step']}, frozen. A fresh tokenizer per language, and "
           f"{start_text(out.get('inits', ['random']))}; {out['total_steps']} updates; {out['seeds']} seeds. Figures are the mean "
           f"± the half-width of a {level}% t-interval over seeds. AUC is the curve's mean validation LM loss "
           "over the updates (lower: learned sooner); the target is the language's unigram baseline minus "
           "the margin, and 'updates to target' averages the seeds that reached it.", ""]
  for budget in (str(b) for b in out["token_budgets"]):
    lines += [f"## Token budget {int(budget):,}", "", *table_lines(out["results"], budget), ""]
  lines += ["![adaptation curves](probe.png)", ""]
  with open(os.path.join(workdir, "probe.md"), "w") as f:
    f.write("\n".join(lines))
  plot_curves({"probe": out}, os.path.join(workdir, "probe.png"), every_budget=True)


LINESTYLES = ("-", "--", ":", "-.")  # the largest budget solid, then each smaller one


def curve_series(runs: dict, *, every_budget: bool = False) -> dict[str, list[dict]]:
  """Per language, the curves a figure draws: each run's (and each of its starts', when a probe ran several)
  at every token budget (largest first), or only at its largest; each with its color and its budget's line
  style."""
  series = {}
  for curve in next(iter(runs.values()))["results"]:
    for i, (name, out) in enumerate(runs.items()):
      per = out["results"][curve]
      budgets = sorted(per, key=int, reverse=True)
      lang, init = per[budgets[0]].get("language", curve), per[budgets[0]].get("init")
      label = name if curve == lang else (init if len(runs) == 1 else f"{name}, {init}")
      mine = series.setdefault(lang, [])
      color = i if curve == lang else len({c["label"] for c in mine})
      for j, b in enumerate(budgets if every_budget else budgets[:1]):
        mine.append({"run": name, "label": label, "budget": int(b), "result": per[b], "color_index": color,
                     "linestyle": LINESTYLES[j % len(LINESTYLES)]})
  return series


def draw_curves(runs: dict, *, colors: dict | None = None, every_budget: bool = False):
  """One panel per language: each run's mean curve with its seed band, at its largest or every budget."""
  series = curve_series(runs, every_budget=every_budget)
  fig, axes = panels(len(series), width=4.2, height=3.4)
  for ax, (lang, curves) in zip(axes, series.items()):
    budgets = sorted({c["budget"] for c in curves})
    for c in curves:
      r = c["result"]
      color = (colors or {}).get(c["run"], f"C{c['color_index']}")
      several = len({x["label"] for x in curves}) > 1
      label = c["label"] if len(budgets) == 1 else (f"{c['label']}, {c['budget']:,} tokens" if several
                                                    else f"{c['budget']:,} tokens")
      ax.plot(r["steps"], r["curve"]["mean"], color=color, ls=c["linestyle"], label=label)
      ax.fill_between(r["steps"], r["curve"]["low"], r["curve"]["high"], color=color, alpha=0.15)
    ax.axhline(curves[0]["result"]["unigram_loss"], color="gray", lw=0.8, ls="--", label="unigram")
    title = f"{lang} (budget {budgets[0]:,} tokens)" if len(budgets) == 1 else f"{lang} (token budgets)"
    style(ax, "embedding updates (body frozen)", "validation LM loss (nats)", title)
  return fig


def plot_curves(runs: dict, path: str, *, colors: dict | None = None, every_budget: bool = False) -> str:
  """`draw_curves` written to `path`; the study's figure keeps to the largest budget (its budgets have a
  figure of their own), a probe's draws them all."""
  return save(draw_curves(runs, colors=colors, every_budget=every_budget), path)


def plot_plasticity(records: list[dict], path: str, *, resets: list[int] = ()) -> str | None:
  """Probe AUC and final loss per language against pretraining updates (records of `plasticity.jsonl`)."""
  if not records:
    return None
  fig, axes = panels(2, width=4.75, height=3.4)
  langs = list(records[0]["results"])
  for i, lang in enumerate(langs):
    xs = [r["step"] for r in records]
    for ax, key in zip(axes, ("auc", "final_loss")):
      ys, lo, hi = [], [], []
      for r in records:
        per = r["results"][lang]
        s = per[max(per, key=int)][key]
        ys.append(s["mean"]), lo.append(s["low"]), hi.append(s["high"])
      ax.plot(xs, ys, "o-", color=f"C{i}", label=lang, ms=3)
      ax.fill_between(xs, lo, hi, color=f"C{i}", alpha=0.2)
  for ax, title in zip(axes, ("probe AUC (mean loss over the probe)", "probe final loss")):
    for s in resets:
      ax.axvline(s, color="gray", lw=0.4, alpha=0.4)
    style(ax, "pretraining update", "nats", title)
  return save(fig, path)


def results_line(results: dict) -> str:
  """One line per probe: each language's final loss at its largest budget (for progress logs)."""
  parts = []
  for lang, per in results.items():
    b = max(per, key=int)
    parts.append(f"{lang} {per[b]['final_loss']['mean']:.3f}")
  return ", ".join(parts)
