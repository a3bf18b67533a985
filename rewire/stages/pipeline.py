"""The whole method from one command: pretrain (standard and forgetting), adapt to each language,
fine-tune in English, assemble, evaluate zero-shot, and write `report.md`.

Every step writes its own workdir under the pipeline's workdir and is skipped when already complete, so
an interrupted pipeline picks up where it stopped:

    <workdir>/<variant>/pretrain            variant = standard | forget
    <workdir>/<variant>/adapt_<lang>
    <workdir>/<variant>/finetune_<task>
    <workdir>/<variant>/assembled_<task>_<lang>
    <workdir>/results.json, results.md, adaptation.png, report.md
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time

from rewire import config as rconfig
from rewire import sharding
from rewire import workdir as rworkdir
from rewire.config.variants import pretrain_config
from rewire.plot import panels, save, style
from rewire.stages.assemble import assemble_once
from rewire.stages.evaluate import evaluate_model, write_results
from rewire.stages.finetune import train_and_evaluate as finetune
from rewire.stages.pretrain import train_and_evaluate as pretrain_or_adapt
from rewire.telemetry import read_records


def plot_adaptation(root: str, variants, languages, out_path: str) -> str | None:
  """Adaptation curves: LM loss against updates, one panel per language, a line per variant."""
  fig, axes = panels(len(languages), width=4.5, height=3.6)
  for ax, lang in zip(axes, languages):
    for variant in variants:
      recs = read_records(os.path.join(root, variant, f"adapt_{lang}", "metrics.jsonl"))
      train = [(r["step"], r["loss"]) for r in recs if "loss" in r and "event" not in r]
      if train:
        ax.plot(*zip(*train), label=variant, color="tab:red" if variant == "forget" else "tab:blue")
    style(ax, "update", "LM loss (nats)", f"adaptation to {lang}")
  return save(fig, out_path)


def run(config, workdir: str) -> dict:
  rconfig.validate(config)
  root = workdir
  os.makedirs(root, exist_ok=True)
  timings = {}
  task = config.finetune.task
  dirs = {}
  for variant in config.variants:
    base = os.path.join(root, variant)
    pre = os.path.join(base, "pretrain")
    t = time.perf_counter()
    if not rworkdir.is_complete(pre):
      c = pretrain_config(config.pretrain, variant, seed=config.seed, forget_every=config.forget_every,
                          clip_norm=config.forget_clip_norm, until=config.forget_until)
      pretrain_or_adapt(c, pre, run_name=f"{variant}/pretrain")
    timings[f"{variant}/pretrain"] = time.perf_counter() - t
    for lang in config.languages:
      ad = os.path.join(base, f"adapt_{lang}")
      t = time.perf_counter()
      if not rworkdir.is_complete(ad):
        c = copy.deepcopy(config.adapt)
        c.seed = config.seed
        c.init_from = pre
        c.data.source = config.adapt_source.format(lang=lang)
        pretrain_or_adapt(c, ad, run_name=f"{variant}/adapt_{lang}")
      timings[f"{variant}/adapt_{lang}"] = time.perf_counter() - t
    ft = os.path.join(base, f"finetune_{task}")
    t = time.perf_counter()
    if not rworkdir.is_complete(ft):
      if os.path.isdir(ft):
        shutil.rmtree(ft)  # an interrupted fine-tuning run (it restarts rather than resumes)
      c = copy.deepcopy(config.finetune)
      c.seed = config.seed
      c.init_from = pre
      finetune(c, ft, run_name=f"{variant}/finetune_{task}")
    timings[f"{variant}/finetune_{task}"] = time.perf_counter() - t
    dirs[variant] = {"en": ft}
    for lang in config.languages:
      dirs[variant][lang] = assemble_once(ft, os.path.join(base, f"adapt_{lang}"),
                                          os.path.join(base, f"assembled_{task}_{lang}"))

  mesh = sharding.make_mesh(config.evaluate.mesh)
  rules = sharding.rules_from_config(config.evaluate.mesh.rules)
  results = {}
  t = time.perf_counter()
  for variant, per_lang in dirs.items():
    results[variant] = {}
    for lang, model_dir in per_lang.items():
      if lang == "en" and not config.include_english:
        continue
      results[variant][lang] = evaluate_model(model_dir, config.evaluate.test_source, lang, mesh=mesh, rules=rules,
                                              batch_size=config.evaluate.eval_batch_size,
                                              max_examples=config.evaluate.max_examples)
  timings["evaluate"] = time.perf_counter() - t
  zero_shot = {v: {l: s for l, s in per.items() if l != "en"} for v, per in results.items()}
  summary = write_results(zero_shot, root)
  summary["english"] = {v: per.get("en") for v, per in results.items()}
  summary["timings_s"] = timings
  plot = plot_adaptation(root, config.variants, config.languages, os.path.join(root, "adaptation.png"))
  write_report(root, config, summary, plot)
  rworkdir.write_summary(root, summary)
  return summary


def write_report(root: str, config, summary: dict, plot: str | None) -> None:
  with open(os.path.join(root, "results.md")) as f:
    tables = f.read()
  lines = [
      "# rewire pipeline report", "",
      f"Task: `{config.finetune.task}`, trained in English on `{config.finetune.train_source}`, "
      f"evaluated zero-shot on `{config.evaluate.test_source}` for {', '.join(config.languages)}.",
      f"Pretraining: {config.pretrain.total_steps} updates; forgetting every {config.forget_every}. "
      f"Adaptation: {config.adapt.total_steps} updates on a {config.adapt.token_budget}-token budget of "
      f"`{config.adapt_source}`.", "",
      "## Zero-shot results", "", tables, ""]
  if "relative_gain" in summary:
    for metric, gain in summary["relative_gain"].items():
      lines.append(f"Mean relative gain of forgetting over standard ({metric}): **{gain:+.1f}%** "
                   "(the paper's headline statistic, mean over languages of 100*(F-S)/S).")
    lines.append("")
  english = {v: s for v, s in summary.get("english", {}).items() if s}
  if english:
    lines += ["English (the fine-tuning language, for reference): "
              + ", ".join(f"{v} {json.dumps({k: round(x, 1) for k, x in s.items()})}" for v, s in english.items()), ""]
  if plot:
    lines += ["## Adaptation curves", "", f"![adaptation curves]({os.path.basename(plot)})", ""]
  lines += ["## Time per step (seconds)", "", "| step | seconds |", "|---|---|"]
  lines += [f"| {k} | {v:.0f} |" for k, v in summary["timings_s"].items()]
  with open(os.path.join(root, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
