"""Zero-shot evaluation (Chen et al. 2023, step 4): score task models on each language's test split.

`config.models` names the assembled models ("standard=runs/standard_nli_{lang},forget=..."); `config.test_source` is a source string in which `{lang}`, if present, becomes each language
(the language is also passed to the loader, which bundled and local multilingual sources use). Writes `results.json` and
`results.md` (one table per metric: models x languages, with the average) and, when both a "standard" and
a "forget" model are scored, the paper's headline statistic: the mean over languages of 100*(F-S)/S.
"""

from __future__ import annotations

import json
import os
from typing import Mapping, Sequence

import jax
import numpy as np

from rewire import config as rconfig
from rewire import sharding
from rewire import workdir as rworkdir
from rewire.workdir import load_params
from rewire.data.tokenizer import load_tokenizer
from rewire.errors import UserError
from rewire.models.task_model import TaskModel, task_model_config
from rewire.tasks.loading import load_task_split
from rewire.tasks.scoring import relative_gain
from rewire.tasks.spec import make_spec


def evaluate_model(workdir: str, test_source: str, lang: str, *, mesh, rules, batch_size: int = 64,
                   max_examples: int = 0) -> dict[str, float]:
  """Scores (percent) of the task model in `workdir` on `test_source` formatted with `lang`."""
  info = rworkdir.read_model_info(workdir)
  if "task" not in info:
    raise UserError(f"{workdir} holds a {info.get('architecture')}, not a task model")
  spec = make_spec(info["task"], label_names=info.get("label_names") or (), max_len=info["max_len"],
                   doc_stride=info["doc_stride"], max_query_len=info["max_query_len"])
  tok = load_tokenizer(rworkdir.tokenizer_path(workdir))
  examples = load_task_split(test_source.format(lang=lang), task=spec.name, lang=lang)
  if max_examples:
    examples = examples[:max_examples]
  features = spec.features(examples, tok)
  tm = TaskModel(spec, task_model_config(info, _eval_model_cfg()), mesh, rules)
  params, _ = load_params(workdir)
  outputs = tm.predict(tm.place(params), features, batch_size)
  return spec.score(examples, features, outputs, lang)


def _eval_model_cfg():
  import ml_collections
  return ml_collections.ConfigDict(dict(dropout=0.0, attention_dropout=0.0, dtype="float32", remat=False))


def results_table(results: Mapping[str, Mapping[str, Mapping[str, float]]], metric: str) -> str:
  """A Markdown table of one metric: a row per model, a column per language, and the average."""
  langs = sorted({lang for per in results.values() for lang in per})
  lines = [f"| {metric} | " + " | ".join(langs) + " | avg |", "|---" * (len(langs) + 2) + "|"]
  for name, per in results.items():
    vals = [per[l][metric] for l in langs if l in per]
    cells = [f"{per[l][metric]:.1f}" if l in per else "-" for l in langs]
    lines.append(f"| {name} | " + " | ".join(cells) + f" | {np.mean(vals):.1f} |")
  if "standard" in results and "forget" in results:
    f = {l: results["forget"][l][metric] for l in langs}
    s = {l: results["standard"][l][metric] for l in langs}
    gains = [f"{100.0 * (f[l] - s[l]) / s[l]:+.1f}" if s[l] else "n/a" for l in langs]
    mean = f"{relative_gain(f, s):+.1f}" if all(s.values()) else "n/a (a standard score is 0)"
    lines.append("| relative gain (%) | " + " | ".join(gains) + f" | {mean} |")
  return "\n".join(lines)


def write_results(results: dict, out_dir: str) -> dict:
  """Writes results.json and results.md; returns the summary (averages and the headline statistic)."""
  metrics = sorted({m for per in results.values() for scores in per.values() for m in scores})
  summary = {"results": results, "average": {
      name: {m: float(np.mean([s[m] for s in per.values()])) for m in metrics} for name, per in results.items()}}
  if "standard" in results and "forget" in results:
    langs = sorted(results["forget"])
    summary["relative_gain"] = {
        m: relative_gain({l: results["forget"][l][m] for l in langs}, {l: results["standard"][l][m] for l in langs})
        for m in metrics if all(results["standard"][l][m] for l in langs)}
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write("\n\n".join(results_table(results, m) for m in metrics) + "\n")
  return summary


def parse_models(spec: str, languages: Sequence[str]) -> dict[str, dict[str, str]]:
  """"standard=runs/s_{lang},forget=runs/f_{lang}" -> {"standard": {"es": "runs/s_es", ...}, ...}."""
  out = {}
  for part in [p.strip() for p in spec.split(",") if p.strip()]:
    name, sep, pattern = part.partition("=")
    if not sep or not name or not pattern:
      raise UserError(f"models entry {part!r} is not name=workdir_pattern")
    out[name.strip()] = {lang: pattern.strip().format(lang=lang) for lang in languages}
  if not out:
    raise UserError("evaluate needs config.models, e.g. 'standard=runs/standard_nli_{lang},"
                    "forget=runs/forget_nli_{lang}'")
  return out


def run(config, workdir: str, *, devices: Sequence[jax.Device] | None = None) -> dict:
  rconfig.validate(config)
  models = parse_models(config.models, config.languages)
  for name, per_lang in models.items():
    for lang, model_dir in per_lang.items():
      if not os.path.isdir(model_dir):
        raise UserError(f"model {name!r} for {lang}: {model_dir} does not exist")
  mesh = sharding.make_mesh(config.mesh, devices)
  rules = sharding.rules_from_config(config.mesh.rules)
  results = {}
  for name, per_lang in models.items():
    results[name] = {}
    for lang, model_dir in per_lang.items():
      results[name][lang] = evaluate_model(model_dir, config.test_source, lang, mesh=mesh, rules=rules,
                                           batch_size=config.eval_batch_size, max_examples=config.max_examples)
  return write_results(results, workdir)
