"""The study's report: `study.json`, `study.md` and its figures, from the jobs' workdirs.

`write_study` reads the models' summaries (`rewire.study.summaries`), computes the statistics
(`rewire.study.statistics`, where the intervals are explained), writes them to study.json, draws the
figures (`rewire.study.figures`) and writes study.md, whose tables and sentences are spelt here.
"""

from __future__ import annotations

import json
import os

from rewire.config.variants import VARIANTS
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
  curves = summaries.pretraining_curves(models, stats["seeds"])
  figures.write_figures(root, stats, probes, curves, registry.run_family(config.pretrain.model).loss_name)
  level = int(round(100 * float(config.probe.confidence)))
  with open(os.path.join(root, "study.md"), "w") as f:
    f.write("\n".join(report_lines(config, stats, level)) + "\n")
  return stats


def _gain(gain: dict) -> str:
  return f"{gain['mean']:+.1f}% [{gain['low']:+.1f}, {gain['high']:+.1f}]"


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
      "# Plasticity study: standard against forgetting pretraining", "",
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
      f"forgetting every {config.forget_every} updates{_until_text(config)}.", "",
      "| variant | validation loss | unigram baseline | below unigram (nats) | resets per run |",
      "|---|---|---|---|---|"]
  for variant in VARIANTS:
    row = stats["pretrain"][variant]
    lines.append(f"| {variant} | {fmt(row['valid_loss'])} | {row['unigram_loss']:.3f} | {fmt(row['below_unigram'])} | "
                 f"{', '.join(map(str, row['resets']))} |")
  return lines + ["", "![pretraining](pretraining.png)", ""]


def _english_task_lines(config, stats: dict) -> list[str]:
  lines = [f"## English task (trained on `{config.finetune.train_source}`; chance "
           f"{chance_accuracy(config.finetune):.0f}%)", "",
           f"| variant | dev accuracy (`{config.finetune.dev_source}`) | test accuracy "
           f"(`{config.evaluate.test_source}`, English) |", "|---|---|---|"]
  for variant in VARIANTS:
    row = stats["task_en"][variant]
    lines.append(f"| {variant} | {fmt(row['dev'], 1)} | {fmt(row['test_en'], 1)} |")
  return lines + [""]


def _zero_shot_lines(stats: dict) -> list[str]:
  languages, main = stats["languages"], str(stats["main_budget"])
  lines = [f"## Zero-shot accuracy (%), embeddings adapted on {int(main):,} tokens for "
           f"{stats['adapt_steps']:,} updates", "",
           "| variant | " + " | ".join(languages) + " |", "|---|" + "---|" * len(languages)]
  for variant in VARIANTS:
    accuracy = stats["zero_shot"][variant][main]
    lines.append(f"| {variant} | " + " | ".join(fmt(accuracy[lang], 1) for lang in languages) + " |")
  gain = stats["relative_gain"][main]
  per_language = ", ".join(f"{lang} {value:+.1f}%" for lang, value in gain["per_language"].items())
  return lines + ["", f"Mean per-language relative gain of forgetting (the paper's statistic): **{_gain(gain)}**; "
                  f"per language: {per_language}.", ""]


def _ablation_lines(config, stats: dict) -> list[str]:
  main, ablation = str(stats["main_budget"]), stats["ablation_languages"]
  lines = [f"## Low-data ablation ({', '.join(ablation)}): zero-shot accuracy against the adaptation budget", "",
           "| budget (tokens) | standard | forget | relative gain |", "|---|---|---|---|"] if ablation else [
           "## Low-data ablation", "", "No real language is adapted at the smaller budgets (`ablation_languages`).", ""]
  for budget in (str(b) for b in stats["budgets"]) if ablation else ():
    means = statistics.ablation_mean_accuracy(stats["zero_shot"], budget, ablation)
    gain = stats["relative_gain"][budget] if budget != main else stats["relative_gain_ablation_main"]
    lines.append(f"| {int(budget):,} | {means['standard']:.1f} | {means['forget']:.1f} | {_gain(gain)} |")
  lines += ["", f"Validation {registry.run_family(config.pretrain.model).loss_name} loss of the adapted embeddings "
            f"({stats['adapt_steps']:,} updates) that these zero-shot models use:", "",
            "| language | budget | standard | forget |", "|---|---|---|---|"]
  for lang, per_budget in stats["adapted_loss"].items():
    for budget, loss in per_budget.items():
      lines.append(f"| {lang} | {int(budget):,} | {fmt(loss['standard'])} | {fmt(loss['forget'])} |")
  return lines + ["", "![zero-shot against budget](zero_shot.png)", ""]


def _adaptation_lines(stats: dict) -> list[str]:
  lines = [f"## Adaptation speed (fresh embeddings, body frozen, {stats['adaptation_updates']} updates)", "",
           "Target: the standard model's mean final adaptation loss for that language and budget. 'Updates' is "
           "how many updates each variant needs to get there (mean over the seeds that did; reached/seeds).", "",
           "| language | budget | standard final loss | forget final loss | standard AUC | forget AUC | "
           "forget: updates to standard's final | reached |", "|---|---|---|---|---|---|---|---|"]
  for lang, per_budget in stats["adaptation"].items():
    for budget, row in per_budget.items():
      standard, forget = row["standard"], row["forget"]
      lines.append(f"| {lang} | {int(budget):,} | {fmt(standard['final_loss'])} | {fmt(forget['final_loss'])} | "
                   f"{fmt(standard['auc'])} | {fmt(forget['auc'])} | {fmt(forget['updates_to_standard_final'], 0)} | "
                   f"{forget['reached']}/{len(stats['seeds'])} |")
  return lines + ["", "![adaptation curves](adaptation.png)", ""]
