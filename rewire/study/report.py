"""The study's statistics and report: `study.json`, `study.md` and its figures, from the jobs' workdirs.

Seeds are pretraining seeds: each (variant, seed) is one pretrained model, probed and carried through the
task with that seed. Every interval is over those seeds: t-intervals for per-variant means, and a seed
bootstrap (each variant's seeds resampled with replacement, independently) for the paper's statistic,
the mean over languages of the relative gain 100 * (forget - standard) / standard.
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np

from rewire import workdir as rworkdir
from rewire.config.variants import VARIANTS
from rewire.plot import panels, save, style
from rewire.probe import stats as probe_stats
from rewire.probe.report import fmt, plot_curves
from rewire.config import parse_pairs
from rewire.study import layout as L
from rewire.study.transfer import COLORS, chance_accuracy, compute_transfer, plot_transfer, transfer_lines
from rewire.tasks.scoring import relative_gain
from rewire.telemetry import read_records

REPORT_FILES = ("study.md", "study.json", "pretraining.png", "adaptation.png", "zero_shot.png", "transfer.png")


def bootstrap_gain(scores: dict, langs, *, resamples: int, seed: int = 0, level: float = 0.95) -> dict:
  """Seed-bootstrap interval of `relative_gain`; `scores[variant][lang]` is a list over seeds."""
  langs = list(langs)

  def gain(groups: dict) -> float:  # groups[variant]: [langs, seeds]
    means = {v: dict(zip(langs, groups[v].mean(axis=1).tolist())) for v in VARIANTS}
    return relative_gain(means["forget"], means["standard"])

  r = probe_stats.bootstrap(gain, {v: [scores[v][l] for l in langs] for v in VARIANTS}, resamples=resamples,
                            seed=seed, level=level)
  return {"mean": r["estimate"], "low": r["low"], "high": r["high"], "resamples": r["resamples"]}


def _load(root: str, config) -> dict:
  models = {}
  for v in VARIANTS:
    for s in config.seeds:
      at = functools.partial(L.job_dir, root, v, s)  # at(job): the workdir of this model's job
      with open(os.path.join(at(L.PROBE), "probe.json")) as f:
        probe = json.load(f)
      models[(v, int(s))] = {
          "pretrain": rworkdir.read_summary(at(L.PRETRAIN)),
          "pretrain_curve": [(r["step"], r["valid_loss"]) for r in
                             read_records(os.path.join(at(L.PRETRAIN), "metrics.jsonl")) if "valid_loss" in r],
          "probe": probe,
          "adapt": _adapted(L.model_dir(root, v, s), L.adapted_jobs(config)),
          "finetune": rworkdir.read_summary(at(L.FINETUNE)),
          "zero_shot": rworkdir.read_summary(at(L.ZERO_SHOT))["results"]}
  return models


def _adapted(base: str, jobs) -> dict:
  """{lang: {budget: result}} of the adaptation `jobs` (the largest budget, and the ablation's smaller ones)."""
  out = {}
  for job in jobs:
    path = os.path.join(base, job, "probe.json")
    if os.path.isfile(path):
      with open(path) as f:
        for lang, per in json.load(f)["results"].items():
          out.setdefault(lang, {}).update(per)
  return out


def _merged_probe(models: dict, variant: str, seeds, target_of) -> dict:
  """One variant's probe results with the models' seeds as the seeds (for bands across models)."""
  first = models[(variant, int(seeds[0]))]["probe"]
  out = {"results": {}, "token_budgets": first["token_budgets"]}
  for lang, per in first["results"].items():
    for b, r in per.items():
      curves = np.stack([np.asarray(models[(variant, int(s))]["probe"]["results"][lang][b]["per_seed"]["curves"][0])
                         for s in seeds])
      out["results"].setdefault(lang, {})[b] = {
          **probe_stats.summarize(r["steps"], curves, target_of(lang, b, r)), "unigram_loss": r["unigram_loss"]}
  return out


def compute(config, root: str) -> dict:
  models = _load(root, config)
  seeds = [int(s) for s in config.seeds]
  langs = list(parse_pairs(config.languages, "languages"))
  budgets = all_budgets = [str(b) for b in sorted(int(b) for b in config.probe.token_budgets)]
  main = budgets[-1]
  level = float(config.probe.confidence)
  out = {"seeds": seeds, "languages": langs, "budgets": [int(b) for b in budgets], "main_budget": int(main)}

  pre = {}
  for v in VARIANTS:
    runs = [models[(v, s)]["pretrain"] for s in seeds]
    pre[v] = {"valid_loss": probe_stats.mean_ci([r["valid_loss"] for r in runs], level),
              "unigram_loss": float(np.mean([r["unigram_loss"] for r in runs])),
              "below_unigram": probe_stats.mean_ci([r["unigram_loss"] - r["valid_loss"] for r in runs], level),
              "resets": [len(r.get("resets", [])) for r in runs]}
  out["pretrain"] = pre

  task = {}
  for v in VARIANTS:
    task[v] = {"dev": probe_stats.mean_ci([models[(v, s)]["finetune"][k] for s in seeds
                                           for k in models[(v, s)]["finetune"] if k.startswith("best_dev_")], level),
               "test_en": probe_stats.mean_ci([models[(v, s)]["zero_shot"]["en"]["full"]["accuracy"]
                                               for s in seeds], level)}
  out["task_en"] = task

  ablation = [l for l in L.ablation_languages(config) if l in langs]  # the controlled ones: `transfer`
  at = {b: (langs if b == main else ablation) for b in budgets}  # the languages adapted at each budget
  budgets = [b for b in budgets if at[b]]
  out["budgets"], out["ablation_languages"] = [int(b) for b in budgets], ablation
  zs = {v: {b: {l: [models[(v, s)]["zero_shot"][l][b]["accuracy"] for s in seeds] for l in at[b]}
            for b in budgets} for v in VARIANTS}
  out["zero_shot"] = {v: {b: {l: probe_stats.mean_ci(zs[v][b][l], level) for l in at[b]} for b in budgets}
                      for v in VARIANTS}
  out["relative_gain"] = {b: {**bootstrap_gain({v: zs[v][b] for v in VARIANTS}, at[b],
                                               resamples=int(config.bootstrap), level=level),
                              "per_language": {l: relative_gain({l: np.mean(zs["forget"][b][l])},
                                                                {l: np.mean(zs["standard"][b][l])}) for l in at[b]}}
                          for b in budgets}
  # The ablation's own statistic at the largest budget, over the same languages as the smaller budgets.
  out["relative_gain_ablation_main"] = bootstrap_gain({v: {l: zs[v][main][l] for l in ablation} for v in VARIANTS},
                                                      ablation, resamples=int(config.bootstrap), level=level)

  # Adaptation: probe curves across model seeds; the target of the speed statistic is the standard
  # model's mean final adaptation loss, per language and budget.
  std = _merged_probe(models, "standard", seeds, lambda l, b, r: r["target_loss"])
  final_std = {l: {b: r["final_loss"]["mean"] for b, r in per.items()} for l, per in std["results"].items()}
  probes = {v: _merged_probe(models, v, seeds, lambda l, b, r: final_std[l][b]) for v in VARIANTS}
  out["adaptation"] = {
      l: {b: {v: {"final_loss": probes[v]["results"][l][b]["final_loss"], "auc": probes[v]["results"][l][b]["auc"],
                  "updates_to_standard_final": probes[v]["results"][l][b]["updates_to_target"],
                  "reached": probes[v]["results"][l][b]["reached_target"]} for v in VARIANTS}
          for b in probes["standard"]["results"][l]}
      for l in probes["standard"]["results"]}
  out["adaptation_updates"] = int(config.probe.total_steps)
  out["adapt_steps"] = L.adapt_steps(config)
  out["adapted_loss"] = {l: {b: {v: probe_stats.mean_ci([models[(v, s)]["adapt"][l][b]["final_loss"]["mean"]
                                                         for s in seeds], level) for v in VARIANTS}
                             for b in budgets if l in at[b]} for l in langs}
  out["transfer"] = compute_transfer(models, config, seeds, all_budgets, level)
  out["_probes"] = probes
  out["_pretrain_curves"] = {L.model_name(v, s): models[(v, s)]["pretrain_curve"] for v in VARIANTS for s in seeds}
  out["headline"] = {"relative_gain": out["relative_gain"][main]["mean"],
                     "relative_gain_low": out["relative_gain"][main]["low"],
                     "relative_gain_high": out["relative_gain"][main]["high"]}
  return out


def _loss_name(model_cfg) -> str:
  """"MLM" for an encoder study, "next-token" for a decoder's."""
  return "next-token" if model_cfg.get("family", "roberta") == "llama" else "MLM"


def _plot_pretraining(curves: dict, unigram: float, path: str, loss_name: str = "MLM") -> None:
  fig, (ax,) = panels(width=6, height=3.6)
  for name, pts in curves.items():
    if pts:
      v = L.variant_of(name)
      ax.plot(*zip(*pts), color=COLORS[v], alpha=0.7, label=v if name == L.model_name(v, 0) else None)
  ax.axhline(unigram, color="gray", ls="--", lw=0.8, label="unigram")
  style(ax, "pretraining update", f"English validation {loss_name} loss (nats)")
  save(fig, path)


def _architecture_name(model_cfg) -> str:
  if model_cfg.get("family", "roberta") != "llama":
    return "RoBERTa"
  kv = model_cfg.num_kv_heads or model_cfg.num_heads
  tied = "tied" if model_cfg.tie_word_embeddings else "untied"
  return f"Llama decoder ({model_cfg.num_heads} query / {kv} key-value heads, SwiGLU, {tied} head)"


def _plot_budgets(stats: dict, path: str) -> None:
  langs, budgets = stats["languages"], [str(b) for b in stats["budgets"]]
  fig, axes = panels(len(langs), width=3.8, height=3.3)
  for ax, l in zip(axes, langs):
    for v in VARIANTS:
      have = [b for b in budgets if l in stats["zero_shot"][v][b]]
      s = [stats["zero_shot"][v][b][l] for b in have]
      ax.errorbar([int(b) for b in have], [x["mean"] for x in s], yerr=[x["half_width"] for x in s],
                  color=COLORS[v], marker="o", capsize=3, label=v)
    ax.set_xscale("log")
    style(ax, "adaptation token budget", "accuracy (%)", f"zero-shot {l}")
  save(fig, path)


def _gain(g: dict) -> str:
  return f"{g['mean']:+.1f}% [{g['low']:+.1f}, {g['high']:+.1f}]"


def write_study(config, root: str) -> dict:
  """Computes the study's statistics and writes study.json, study.md and the figures; returns the stats."""
  stats = compute(config, root)
  probes, curves = stats.pop("_probes"), stats.pop("_pretrain_curves")
  level = int(round(100 * float(config.probe.confidence)))
  timings = []
  path = os.path.join(root, L.TIMINGS)
  if os.path.isfile(path):
    with open(path) as f:
      timings = [json.loads(l) for l in f if l.strip()]
  stats["wall_s"] = float(sum(t["invocation_s"] for t in timings))
  stats["job_s"] = float(sum(sum(t["jobs_s"].values()) for t in timings))
  stats["invocations"] = sum(1 for t in timings if t["jobs_s"])  # the ones that ran jobs
  with open(os.path.join(root, "study.json"), "w") as f:
    json.dump(stats, f, indent=2)
  _plot_pretraining(curves, stats["pretrain"]["standard"]["unigram_loss"], os.path.join(root, "pretraining.png"),
                    _loss_name(config.pretrain.model))
  plot_curves(probes, os.path.join(root, "adaptation.png"), colors=COLORS)
  _plot_budgets(stats, os.path.join(root, "zero_shot.png"))
  plot_transfer(stats["transfer"], os.path.join(root, "transfer.png"))
  with open(os.path.join(root, "study.md"), "w") as f:
    f.write("\n".join(report_lines(config, stats, level)) + "\n")
  return stats


def _until_text(config) -> str:
  until = int(config.get("forget_until", 0))
  return f" until update {until:,} (the last episode runs to the end)" if until else ""


def report_lines(config, stats: dict, level: int) -> list[str]:
  seeds, langs, main = stats["seeds"], stats["languages"], str(stats["main_budget"])
  p = config.pretrain
  lines = [
      "# Plasticity study: standard against forgetting pretraining", "",
      f"{len(seeds)} pretraining seeds per variant ({', '.join(map(str, seeds))}). Every ± is the half-width of a "
      f"{level}% t-interval over those seeds; brackets are {level}% seed-bootstrap intervals "
      f"({config.bootstrap:,} resamples). Wall time {stats['wall_s'] / 60:.1f} min over "
      f"{stats['invocations']} invocation(s) ({stats['job_s'] / 60:.1f} min of job time on "
      f"{config.workers or os.cpu_count()} workers).", "",
      "## Pretraining (English)", "",
      f"{p.model.num_layers}-layer, hidden-{p.model.hidden_size} {_architecture_name(p.model)}, vocab "
      f"{p.data.vocab_size}, {_loss_name(p.model)} objective, batch "
      f"{p.batch_size}x{p.data.seq_len}, {p.total_steps:,} updates on `{p.data.source}`; forgetting every "
      f"{config.forget_every} updates{_until_text(config)}.", "",
      "| variant | validation loss | unigram baseline | below unigram (nats) | resets per run |",
      "|---|---|---|---|---|"]
  for v in VARIANTS:
    r = stats["pretrain"][v]
    lines.append(f"| {v} | {fmt(r['valid_loss'])} | {r['unigram_loss']:.3f} | {fmt(r['below_unigram'])} | "
                 f"{', '.join(map(str, r['resets']))} |")
  lines += ["", "![pretraining](pretraining.png)", "",
            f"## English task (trained on `{config.finetune.train_source}`; chance "
            f"{chance_accuracy(config.finetune):.0f}%)", "",
            f"| variant | dev accuracy (`{config.finetune.dev_source}`) | test accuracy "
            f"(`{config.evaluate.test_source}`, English) |", "|---|---|---|"]
  for v in VARIANTS:
    t = stats["task_en"][v]
    lines.append(f"| {v} | {fmt(t['dev'], 1)} | {fmt(t['test_en'], 1)} |")
  lines += ["", f"## Zero-shot accuracy (%), embeddings adapted on {int(main):,} tokens for "
            f"{stats['adapt_steps']:,} updates", "",
            "| variant | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs)]
  for v in VARIANTS:
    lines.append(f"| {v} | " + " | ".join(fmt(stats["zero_shot"][v][main][l], 1) for l in langs) + " |")
  g = stats["relative_gain"][main]
  lines += ["", f"Mean per-language relative gain of forgetting (the paper's statistic): **{_gain(g)}**; per "
            "language: " + ", ".join(f"{l} {x:+.1f}%" for l, x in g["per_language"].items()) + ".", ""]
  lines += transfer_lines(stats["transfer"], stats["adapt_steps"], level)
  lines += [f"## Low-data ablation ({', '.join(stats['ablation_languages'])}): zero-shot accuracy against the "
            "adaptation budget", "",
            "| budget (tokens) | standard | forget | relative gain |", "|---|---|---|---|"]
  for b in (str(x) for x in stats["budgets"]):
    abl = stats["ablation_languages"]
    means = {v: np.mean([stats["zero_shot"][v][b][l]["mean"] for l in abl]) for v in VARIANTS}
    gain = stats["relative_gain"][b] if b != main else stats["relative_gain_ablation_main"]
    lines.append(f"| {int(b):,} | {means['standard']:.1f} | {means['forget']:.1f} | {_gain(gain)} |")
  lines += ["", f"Validation {_loss_name(p.model)} loss of the adapted embeddings ({stats['adapt_steps']:,} updates) "
            "that these zero-shot models use:", "", "| language | budget | standard | forget |", "|---|---|---|---|"]
  for l, per in stats["adapted_loss"].items():
    for b, r in per.items():
      lines.append(f"| {l} | {int(b):,} | {fmt(r['standard'])} | {fmt(r['forget'])} |")
  lines += ["", "![zero-shot against budget](zero_shot.png)", "",
            f"## Adaptation speed (fresh embeddings, body frozen, {stats['adaptation_updates']} updates)", "",
            "Target: the standard model's mean final adaptation loss for that language and budget. 'Updates' is "
            "how many updates each variant needs to get there (mean over the seeds that did; reached/seeds).", "",
            "| language | budget | standard final loss | forget final loss | standard AUC | forget AUC | "
            "forget: updates to standard's final | reached |", "|---|---|---|---|---|---|---|---|"]
  for l, per in stats["adaptation"].items():
    for b, r in per.items():
      s, f_ = r["standard"], r["forget"]
      lines.append(f"| {l} | {int(b):,} | {fmt(s['final_loss'])} | {fmt(f_['final_loss'])} | {fmt(s['auc'])} | "
                   f"{fmt(f_['auc'])} | {fmt(f_['updates_to_standard_final'], 0)} | {f_['reached']}/{len(seeds)} |")
  lines += ["", "![adaptation curves](adaptation.png)", ""]
  return lines
