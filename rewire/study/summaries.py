"""Reads back what the study's jobs wrote: each model's summaries, its pretraining curve, the timings.

The one place the report touches the steps' directories (found through the graph); what it returns is
plain data for `rewire.study.statistics` and `rewire.study.figures`, which read no files themselves.
"""

from __future__ import annotations

import json
import os

from rewire import workdir as rworkdir
from rewire.study import layout as L
from rewire.telemetry import read_records


def load_models(dirs: dict[str, str], config) -> dict:
  """{(variant, seed): that model's pretraining, probe, adaptation, fine-tuning and zero-shot summaries};
  `dirs` maps each step name to its directory (the graph's)."""
  models = {}
  for variant in config.variants:
    for seed in config.seeds:
      job_dir = lambda job, v=variant, s=seed: dirs[L.job_name(v, s, job)]  # the directory of this model's step
      with open(os.path.join(job_dir(L.PROBE), "probe.json")) as f:
        probe = json.load(f)
      metrics = read_records(os.path.join(job_dir(L.PRETRAIN), "metrics.jsonl"))
      models[(variant, int(seed))] = {
          "pretrain": rworkdir.read_summary(job_dir(L.PRETRAIN)),
          "pretrain_curve": [(record["step"], record["valid_loss"]) for record in metrics if "valid_loss" in record],
          "probe": probe,
          "adapt": _adapted([job_dir(job) for job in L.adapted_jobs(config)]),
          "finetune": rworkdir.read_summary(job_dir(L.FINETUNE)),
          "zero_shot": rworkdir.read_summary(job_dir(L.ZERO_SHOT))["results"]}
  return models


def _adapted(directories) -> dict:
  """{lang: {budget: result}} of the adaptation steps in `directories` (the largest budget, and the
  ablation's smaller ones)."""
  out = {}
  for directory in directories:
    path = os.path.join(directory, "probe.json")
    if os.path.isfile(path):
      with open(path) as f:
        for lang, per_budget in json.load(f)["results"].items():
          out.setdefault(lang, {}).update(per_budget)
  return out


def pretraining_curves(models: dict) -> dict:
  """{model name: [(update, English validation loss)]} of every model, variant by variant."""
  return {L.model_name(variant, seed): model["pretrain_curve"] for (variant, seed), model in models.items()}


def read_timings(root: str) -> list[dict]:
  """One record per invocation of the study (`layout.TIMINGS`): its wall time and each job's seconds."""
  path = os.path.join(root, L.TIMINGS)
  if not os.path.isfile(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
