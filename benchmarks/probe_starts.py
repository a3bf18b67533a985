"""Compares the starts of new rows across bodies: one table and one figure from several probes' probe.json.

    python benchmarks/probe_starts.py --out=results/probe_starts \
        standard=runs/probe_standard forget=runs/probe_forget weight_decay=runs/probe_weight_decay

Each NAME=DIR is a probe run with several starts (`--config.inits=random,mean,overlap,focus`). It writes
`OUT/table.md` (per language, budget and start: each body's final loss and AUC, mean ± 95% t-interval over
seeds, and the rows each start copied, mixed and drew; then the same differences seed by seed, body against
body and start against random) and `OUT/curves.png` (a panel per language and
body, a line per start), and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os

from rewire.plot import panels, save, style
from rewire.probe.report import fmt, rows_text


def load(pairs: list[str]) -> dict[str, dict]:
  out = {}
  for pair in pairs:
    name, _, directory = pair.partition("=")
    with open(os.path.join(directory, "probe.json")) as f:
      out[name] = json.load(f)
  return out


def table(probes: dict[str, dict]) -> list[str]:
  names = list(probes)
  first = next(iter(probes.values()))
  bodies = ", ".join(f"{n} (`{p['init_from']}`, step {p['step']})" for n, p in probes.items())
  lines = [f"Bodies: {bodies}; "
           f"{first['seeds']} seeds, {first['total_steps']} updates per table. Mean ± the half-width of a "
           f"{round(100 * first['confidence'])}% t-interval over seeds.", ""]
  head = ["language", "budget", "start", "rows copied / mixed / random"] + [f"{n} final loss" for n in names] + [
      f"{n} AUC" for n in names]
  lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for curve, per_budget in first["results"].items():
    for budget, r in per_budget.items():
      cells = [r.get("language", curve), f"{int(budget):,}", r.get("init", "random"), rows_text(r)]
      cells += [fmt(p["results"][curve][budget]["final_loss"]) for p in probes.values()]
      cells += [fmt(p["results"][curve][budget]["auc"]) for p in probes.values()]
      lines.append("| " + " | ".join(cells) + " |")
  return lines


def _per_seed(probe: dict, curve: str, budget: str) -> tuple:
  """Each seed's final loss and AUC (the mean of its curve) of one curve."""
  import numpy as np
  curves = np.asarray(probe["results"][curve][budget]["per_seed"]["curves"])
  return curves[:, -1], curves.mean(axis=1)


def _diff(values) -> str:
  return f"{values.mean():+.3f} ({', '.join(f'{v:+.3f}' for v in values)})"


def paired(probes: dict[str, dict]) -> list[str]:
  """Differences seed by seed (the tables of one seed share draws, batches and masks across starts and
  bodies): each body against the first, at every start; each start against random, on every body."""
  names, first = list(probes), next(iter(probes.values()))
  base = names[0]
  lines = ["", f"Seed by seed, final loss and AUC of each body less the {base} body's (mean, then each seed; "
           "negative: lower loss):", "",
           "| language/start | " + " | ".join(f"{n} final | {n} AUC" for n in names[1:]) + " |",
           "|---|" + "---|---|" * (len(names) - 1)]
  for curve, per_budget in first["results"].items():
    for budget in per_budget:
      b_final, b_auc = _per_seed(probes[base], curve, budget)
      cells = []
      for n in names[1:]:
        final, auc = _per_seed(probes[n], curve, budget)
        cells += [_diff(final - b_final), _diff(auc - b_auc)]
      lines.append(f"| {curve} | " + " | ".join(cells) + " |")
  starts = [r["init"] for r in (per[next(iter(per))] for per in first["results"].values())]
  others = [s for s in dict.fromkeys(starts) if s != "random"]
  lines += ["", "Seed by seed, each start less the random start on the same body:", "",
            "| body | language | " + " | ".join(f"{s} final | {s} AUC" for s in others) + " |",
            "|---|---|" + "---|---|" * len(others)]
  languages = list(dict.fromkeys(r["language"] for per in first["results"].values() for r in per.values()))
  for n, probe in probes.items():
    for lang in languages:
      for budget in first["results"][f"{lang}/random"]:
        r_final, r_auc = _per_seed(probe, f"{lang}/random", budget)
        cells = []
        for start in others:
          final, auc = _per_seed(probe, f"{lang}/{start}", budget)
          cells += [_diff(final - r_final), _diff(auc - r_auc)]
        lines.append(f"| {n} | {lang} | " + " | ".join(cells) + " |")
  return lines


def figure(probes: dict[str, dict], path: str) -> str:
  first = next(iter(probes.values()))
  languages = sorted({r["language"] for per in first["results"].values() for r in per.values()})
  fig, axes = panels(len(languages) * len(probes), width=3.6, height=3.0)
  for ax, (lang, name) in zip(axes, [(l, n) for l in languages for n in probes]):
    for i, (curve, per_budget) in enumerate(c for c in probes[name]["results"].items()
                                            if next(iter(c[1].values()))["language"] == lang):
      r = per_budget[max(per_budget, key=int)]
      ax.plot(r["steps"], r["curve"]["mean"], color=f"C{i}", label=r.get("init", "random"))
      ax.fill_between(r["steps"], r["curve"]["low"], r["curve"]["high"], color=f"C{i}", alpha=0.15)
    style(ax, "embedding updates (body frozen)", "validation loss (nats)", f"{lang}, {name} body")
  return save(fig, path)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True)
  parser.add_argument("probes", nargs="+", help="NAME=DIR of a probe run")
  args = parser.parse_args()
  probes = load(args.probes)
  os.makedirs(args.out, exist_ok=True)
  lines = table(probes) + paired(probes)
  with open(os.path.join(args.out, "table.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  figure(probes, os.path.join(args.out, "curves.png"))
  print("\n".join(lines))


if __name__ == "__main__":
  main()
