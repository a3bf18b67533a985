"""The study's report: `study.json`, `study.md` and its figures, from the jobs' workdirs.

`write_study` reads the models' summaries (`rewire.study.summaries`), computes the statistics
(`rewire.study.statistics`, where the intervals are explained), writes them to study.json, draws the
figures (`rewire.study.figures`) and writes study.md, whose tables and sentences are spelt here.
"""

from __future__ import annotations

import json
import os

from rewire.config.variants import BASELINE, compared
from rewire.probe.report import fmt
from rewire.models import registry
from rewire.study import figures, statistics, summaries
from rewire.study.transfer import chance_accuracy, transfer_lines

REPORT_FILES = ("study.md", "study.json", "pretraining.png", "adaptation.png", "zero_shot.png", "transfer.png")


def write_study(config, root: str, dirs: dict[str, str]) -> dict:
  """Computes the study's statistics from the steps' directories (`dirs`: step name -> directory) and
  writes study.json, study.md and the figures into `root`; returns the stats."""
  models = summaries.load_models(dirs, config)
  stats, probes = statistics.compute(config, models)
  stats.update(statistics.timing_stats(summaries.read_timings(root)))
  with open(os.path.join(root, "study.json"), "w") as f:
    json.dump(stats, f, indent=2)
  curves = summaries.pretraining_curves(models)
  figures.write_figures(root, stats, probes, curves, registry.run_family(config.pretrain.model).loss_name)
  level = int(round(100 * float(config.probe.confidence)))
  with open(os.path.join(root, "study.md"), "w") as f:
    f.write("\n".join(report_lines(config, stats, level)) + "\n")
  return stats


def _gain(gain: dict) -> str:
  return f"{gain['mean']:+.1f}% [{gain['low']:+.1f}, {gain['high']:+.1f}]"


def _name(variant: str) -> str:
  return {"forget": "forgetting", "weight_decay": "weight decay"}.get(variant, variant)


def _variant_text(config, stats) -> str:
  """What sets the variants apart, for the pretraining section."""
  parts = []
  if "forget" in stats["variants"]:
    parts.append(f"forgetting every {config.forget_every} updates{_until_text(config)}")
  if "weight_decay" in stats["variants"]:
    parts.append(f"weight decay {config.weight_decay:g} for the weight_decay variant (the others: "
                 f"{config.pretrain.optim.weight_decay:g})")
  return "; ".join(parts)


def _until_text(config) -> str:
  until = int(config.get("forget_until", 0))
  return f" until update {until:,} (the last episode runs to the end)" if until else ""


def report_lines(config, stats: dict, level: int) -> list[str]:
  """study.md, line by line: its sections in order."""
  return (_intro_lines(config, stats, level) + _pretraining_lines(config, stats) + _english_task_lines(config, stats)
          + _zero_shot_lines(stats) + transfer_lines(stats["transfer"], stats["adapt_steps"], level)
          + _ablation_lines(config, stats) + _adaptation_lines(stats))


def _intro_lines(config, stats: dict, level: int) -> list[str]:
  seeds = stats["seeds"]
  return [
      f"# Plasticity study: {' and '.join(_name(v) for v in compared(stats['variants']))} against standard "
      "pretraining", "",
      f"{len(seeds)} pretraining seeds per variant ({', '.join(map(str, seeds))}). Every ± is the half-width of a "
      f"{level}% t-interval over those seeds; brackets are {level}% seed-bootstrap intervals "
      f"({config.bootstrap:,} resamples). Wall time {stats['wall_s'] / 60:.1f} min over "
      f"{stats['invocations']} invocation(s) ({stats['job_s'] / 60:.1f} min of step time).", ""]


def _pretraining_lines(config, stats: dict) -> list[str]:
  pretrain = config.pretrain
  family = registry.run_family(pretrain.model)
  lines = [
      "## Pretraining (English)", "",
      f"{pretrain.model.num_layers}-layer, hidden-{pretrain.model.hidden_size} {family.describe(pretrain.model)}, "
      f"vocab {pretrain.data.vocab_size}, {family.loss_name} objective, batch "
      f"{pretrain.batch_size}x{pretrain.data.seq_len}, {pretrain.total_steps:,} updates on `{pretrain.data.source}`; "
      f"{_variant_text(config, stats)}.", "",
      "| variant | validation loss | unigram baseline | below unigram (nats) | resets per run |",
      "|---|---|---|---|---|"]
  for variant in stats["variants"]:
    row = stats["pretrain"][variant]
    lines.append(f"| {variant} | {fmt(row['valid_loss'])} | {row['unigram_loss']:.3f} | {fmt(row['below_unigram'])} | "
                 f"{', '.join(map(str, row['resets']))} |")
  return lines + ["", "![pretraining](pretraining.png)", ""]


def _english_task_lines(config, stats: dict) -> list[str]:
  lines = [f"## English task (trained on `{config.finetune.train_source}`; chance "
           f"{chance_accuracy(config.finetune):.0f}%)", "",
           f"| variant | dev accuracy (`{config.finetune.dev_source}`) | test accuracy "
           f"(`{config.evaluate.test_source}`, English) |", "|---|---|---|"]
  for variant in stats["variants"]:
    row = stats["task_en"][variant]
    lines.append(f"| {variant} | {fmt(row['dev'], 1)} | {fmt(row['test_en'], 1)} |")
  return lines + [""]


def _zero_shot_lines(stats: dict) -> list[str]:
  languages, main = stats["languages"], str(stats["main_budget"])
  lines = [f"## Zero-shot accuracy (%), embeddings adapted on {int(main):,} tokens for "
           f"{stats['adapt_steps']:,} updates", "",
           "| variant | " + " | ".join(languages) + " |", "|---|" + "---|" * len(languages)]
  for variant in stats["variants"]:
    accuracy = stats["zero_shot"][variant][main]
    lines.append(f"| {variant} | " + " | ".join(fmt(accuracy[lang], 1) for lang in languages) + " |")
  lines.append("")
  by_start = stats.get("relative_gain_by_start") or {"": stats["relative_gain"]}
  for start, gains in by_start.items():
    for variant in compared(stats["variants"]):
      gain = gains[variant][main]
      per_language = ", ".join(f"{lang} {value:+.1f}%" for lang, value in gain["per_language"].items())
      lines.append(f"Mean per-language relative gain of {_name(variant)} over standard"
                   + (f", rows started by {start}" if start else "") + f" (the paper's statistic): "
                   f"**{_gain(gain)}**; per language: {per_language}.")
  return lines + [""]


def _ablation_lines(config, stats: dict) -> list[str]:
  main, ablation, variants = str(stats["main_budget"]), stats["ablation_languages"], stats["variants"]
  others = compared(variants)
  head = ["budget (tokens)", *variants, *(f"relative gain, {v}" for v in others)]
  lines = [f"## Low-data ablation ({', '.join(ablation)}): zero-shot accuracy against the adaptation budget", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)] if ablation else [
           "## Low-data ablation", "", "No real language is adapted at the smaller budgets (`ablation_languages`).", ""]
  first = statistics.curves_of_start(ablation, stats["starts"])
  for budget in (str(b) for b in stats["budgets"]) if ablation else ():
    means = statistics.ablation_mean_accuracy(stats["zero_shot"], budget, first)
    gains = [stats["relative_gain"][v][budget] if budget != main else stats["relative_gain_ablation_main"][v]
             for v in others]
    lines.append(f"| {int(budget):,} | " + " | ".join([*(f"{means[v]:.1f}" for v in variants), *map(_gain, gains)])
                 + " |")
  lines += ["", f"Validation {registry.run_family(config.pretrain.model).loss_name} loss of the adapted embeddings "
            f"({stats['adapt_steps']:,} updates) that these zero-shot models use:", "",
            "| language | budget | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
  for lang, per_budget in stats["adapted_loss"].items():
    for budget, loss in per_budget.items():
      lines.append(f"| {lang} | {int(budget):,} | " + " | ".join(fmt(loss[v]) for v in variants) + " |")
  return lines + ["", "![zero-shot against budget](zero_shot.png)", ""]


def _adaptation_lines(stats: dict) -> list[str]:
  variants, others = stats["variants"], compared(stats["variants"])
  head = (["language", "budget"] + [f"{v} final loss" for v in variants] + [f"{v} AUC" for v in variants]
          + [f"{v}: updates to {BASELINE}'s final (reached)" for v in others])
  lines = [f"## Adaptation speed (fresh embeddings, body frozen, {stats['adaptation_updates']} updates)", "",
           f"Target: the {BASELINE} model's mean final adaptation loss for that language and budget. 'Updates' is "
           "how many updates each variant needs to get there (mean over the seeds that did; reached/seeds).", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for lang, per_budget in stats["adaptation"].items():
    for budget, row in per_budget.items():
      cells = ([lang, f"{int(budget):,}"] + [fmt(row[v]["final_loss"]) for v in variants]
               + [fmt(row[v]["auc"]) for v in variants]
               + [f"{fmt(row[v]['updates_to_standard_final'], 0)} ({row[v]['reached']}/{len(stats['seeds'])})"
                  for v in others])
      lines.append("| " + " | ".join(cells) + " |")
  return lines + ["", "![adaptation curves](adaptation.png)", ""]
