"""The whole method from one command: pretrain (standard and forgetting), adapt to each language,
fine-tune in English, assemble, evaluate zero-shot, and write `report.md`.

The pipeline is a graph of steps (`rewire.steps`) run on Ray, each in a directory of its own named by the
step and its hash, so an interrupted pipeline picks up where it stopped and a changed key reruns exactly
the steps it reaches:

    <workdir>/<variant>/pretrain-<hash>                  variant = standard | forget | weight_decay
    <workdir>/<variant>/adapt_<lang>-<hash>
    <workdir>/<variant>/finetune_<task>-<hash>
    <workdir>/<variant>/assembled_<task>_<lang>-<hash>
    <workdir>/evaluate-<hash>                            every model's scores
    <workdir>/results.json, results.md, adaptation.png, report.md, graph.json, logs/
"""

from __future__ import annotations

import copy
import json
import os

from rewire import config as rconfig
from rewire import sharding
from rewire import workdir as rworkdir
from rewire.config.evaluate import assemble_defaults
from rewire.config.variants import pretrain_config
from rewire.plot import panels, save, style
from rewire.stages.evaluate import evaluate_model, write_results
from rewire.steps.cluster import Settings, step_resources
from rewire.steps.engine import run_graph
from rewire.steps.graph import Graph
from rewire.steps.step import Step, ref
from rewire.study.transfer import COLORS
from rewire.telemetry import read_records

EVALUATE = "evaluate"


def step_names(variant: str, task: str, lang: str = "") -> dict[str, str]:
  return {"pretrain": f"{variant}/pretrain", "adapt": f"{variant}/adapt_{lang}",
          "finetune": f"{variant}/finetune_{task}", "assembled": f"{variant}/assembled_{task}_{lang}"}


def build_steps(config) -> list[Step]:
  """The pipeline's steps: per variant, pretraining, an adaptation and an assembly per language, a
  fine-tune; then one evaluation of every model."""
  resources, pretrain_resources = step_resources(config)
  task, steps, models = config.finetune.task, [], {}
  for variant in config.variants:
    names = step_names(variant, task)
    c = pretrain_config(config.pretrain, variant, seed=config.seed, forget_every=config.forget_every,
                        clip_norm=config.forget_clip_norm, until=config.forget_until, weight_decay=config.weight_decay)
    steps.append(Step(names["pretrain"], c, resources=pretrain_resources, hosts=int(config.pretrain_hosts),
                      resumes=True))
    ft = copy.deepcopy(config.finetune)
    ft.update(seed=config.seed, init_from=ref(names["pretrain"]))
    steps.append(Step(names["finetune"], ft, resources=resources))
    models[variant] = {"en": ref(names["finetune"])}
    for lang in config.languages:
      names = step_names(variant, task, lang)
      ad = copy.deepcopy(config.adapt)
      ad.update(seed=config.seed, init_from=ref(names["pretrain"]))
      ad.data.source = config.adapt_source.format(lang=lang)
      asm = assemble_defaults()
      asm.update(task_from=ref(names["finetune"]), embeddings_from=ref(names["adapt"]))
      steps += [Step(names["adapt"], ad, resources=resources, resumes=True),
                Step(names["assembled"], asm, resources=resources)]
      models[variant][lang] = ref(names["assembled"])
  evaluate = {"models": models, "include_english": bool(config.include_english),
              **{k: config.evaluate[k] for k in ("test_source", "eval_batch_size", "max_examples")},
              "mesh": config.evaluate.mesh.to_dict()}
  steps.append(Step(EVALUATE, evaluate, entry="rewire.study.pipeline:evaluate_all", resources=resources))
  return steps


def evaluate_all(config: dict, workdir: str) -> dict:
  """Scores every model of the pipeline on its language's test set; writes them as the step's summary."""
  mesh = sharding.make_mesh(config["mesh"])
  rules = sharding.rules_from_config(config["mesh"]["rules"])
  scores = {}
  for variant, per_lang in config["models"].items():
    scores[variant] = {}
    for lang, model_dir in per_lang.items():
      if lang == "en" and not config["include_english"]:
        continue
      scores[variant][lang] = evaluate_model(model_dir, config["test_source"], lang, mesh=mesh, rules=rules,
                                             batch_size=config["eval_batch_size"], max_examples=config["max_examples"])
  summary = {"finished": True, "scores": scores}
  rworkdir.write_summary(workdir, summary)
  return summary


def plot_adaptation(graph: Graph, config, out_path: str) -> str | None:
  """Adaptation curves: LM loss against updates, one panel per language, a line per variant."""
  fig, axes = panels(len(config.languages), width=4.5, height=3.6)
  for ax, lang in zip(axes, config.languages):
    for variant in config.variants:
      recs = read_records(os.path.join(graph.dirs[step_names(variant, "", lang)["adapt"]], "metrics.jsonl"))
      train = [(r["step"], r["loss"]) for r in recs if "loss" in r and "event" not in r]
      if train:
        ax.plot(*zip(*train), label=variant, color=COLORS[variant])
    style(ax, "update", "LM loss (nats)", f"adaptation to {lang}")
  return save(fig, out_path)


def run(config, workdir: str) -> dict:
  rconfig.validate(config)
  root = workdir
  graph = Graph(build_steps(config), root)
  settings = Settings.from_config(config, "pipeline")
  if config.dry_run:
    run_graph(graph, settings, dry_run=True)
    return {"dry_run": True}
  run_graph(graph, settings)
  results = rworkdir.read_summary(graph.dirs[EVALUATE])["scores"]
  zero_shot = {v: {l: s for l, s in per.items() if l != "en"} for v, per in results.items()}
  summary = write_results(zero_shot, root)
  summary["english"] = {v: per.get("en") for v, per in results.items()}
  summary["timings_s"] = {name: (graph.record(name) or {}).get("seconds", 0.0) for name in graph.order}
  summary["dirs"] = dict(graph.dirs)
  plot = plot_adaptation(graph, config, os.path.join(root, "adaptation.png"))
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
  lines += ["## Time per step (seconds, as each step's run took)", "", "| step | seconds |", "|---|---|"]
  lines += [f"| {k} | {v:.0f} |" for k, v in summary["timings_s"].items()]
  with open(os.path.join(root, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
