"""The plasticity study: standard against forgetting pretraining, several seeds, carried to a zero-shot task.

`python -m rewire.main --config=configs/study.py --workdir=runs/study`

The study is a job graph (`rewire.study.jobs`); every job is an ordinary stage run in its own workdir, so an
interrupted study resumes where it stopped, and every model it makes can be inspected, probed or exported
on its own:

    data/<name>                       prepared corpora (English pretraining text, each probe language)
    <variant>_s<seed>/pretrain        pretraining (variant = standard | forget)
    <variant>_s<seed>/probe           plasticity: fresh embeddings per language and token budget on the
                                      frozen body, `probe.total_steps` updates, curves
    <variant>_s<seed>/adapt           the language adaptation for the zero-shot test: the probe's recipe on
                                      the zero-shot languages at the largest budget, `adapt_steps` updates,
                                      tables saved under adapt/embeddings/
    <variant>_s<seed>/adapt_ablation  the same for `ablation_languages` at the smaller budgets
    <variant>_s<seed>/finetune        the English task model (body trained, embeddings frozen)
    <variant>_s<seed>/zero_shot       the task model assembled with each language's embeddings, evaluated
    study.json, study.md, *.png       the statistics (`rewire.study.report`)
"""

from __future__ import annotations

import copy
import functools
import json
import os
import time

from rewire import workdir as rworkdir
from rewire.errors import UserError
from rewire.study.jobs import Job, run_jobs
from rewire.probe.stage import parse_pairs

VARIANTS = ("standard", "forget")


def model_dir(root: str, variant: str, seed: int) -> str:
  return os.path.join(root, f"{variant}_s{seed}")


def _prepare_job(root: str, name: str, source: str, data_cfg) -> Job:
  from rewire.config import prepare_defaults
  c = prepare_defaults()
  c.data = copy.deepcopy(data_cfg)
  c.data.source = source
  from rewire.data.corpus import MANIFEST
  return Job(f"data/{name}", c, os.path.join(root, "data", name),
             complete=lambda d: os.path.isfile(os.path.join(d, MANIFEST)))


def build_jobs(config, root: str) -> list[Job]:
  """Every job of the study, in an order that keeps two workers busy."""
  jobs = [_prepare_job(root, "pretrain", config.pretrain.data.source, config.pretrain.data)]
  languages = {**parse_pairs(config.relearn, "relearn"), **parse_pairs(config.languages, "languages")}
  for name, source in languages.items():
    jobs.append(_prepare_job(root, name, source, config.probe.data))
  prepared = ",".join(f"{n}=prepared:{os.path.join(root, 'data', n)}" for n in languages)
  at = lambda names: ",".join(f"{n}=prepared:{os.path.join(root, 'data', n)}" for n in names)
  zero_shot_prepared = at(parse_pairs(config.languages, "languages"))
  ablation_prepared = at(ablation_languages(config))
  budgets = sorted(int(b) for b in config.probe.token_budgets)
  main_budget, small_budgets = budgets[-1], tuple(budgets[:-1])
  per_model = []
  for seed in config.seeds:
    for variant in VARIANTS:
      base = model_dir(root, variant, seed)
      pre = copy.deepcopy(config.pretrain)
      pre.seed = int(seed)
      pre.data.source = f"prepared:{os.path.join(root, 'data', 'pretrain')}"
      pre.forget_every = int(config.forget_every) if variant == "forget" else 0
      pre.optim.clip_norm = float(config.forget_clip_norm) if variant == "forget" else 0.0
      if variant == "standard" or int(seed) != int(config.seeds[0]):
        pre.probe_every = 0  # probes during pretraining: the first seed of each variant only
      jobs.append(Job(f"{variant}_s{seed}/pretrain", pre, os.path.join(base, "pretrain"),
                      after=("data/pretrain", *[f"data/{n}" for n in languages])))
      probe = copy.deepcopy(config.probe)
      probe.update(init_from=os.path.join(base, "pretrain"), seed=int(seed), seeds=1, languages=prepared)
      # The embeddings for the zero-shot test: the same recipe, trained longer, zero-shot languages only.
      adapt = copy.deepcopy(probe)
      adapt.update(languages=zero_shot_prepared, token_budgets=(main_budget,), total_steps=int(config.adapt_steps),
                   eval_every=max(1, int(config.adapt_steps) // 10), save_embeddings=True)
      ablation = copy.deepcopy(adapt)
      ablation.update(languages=ablation_prepared, token_budgets=small_budgets)
      ft = copy.deepcopy(config.finetune)
      ft.update(init_from=os.path.join(base, "pretrain"), seed=int(seed))
      zs = functools.partial(zero_shot, config.to_dict(), base)
      per_model += [
          Job(f"{variant}_s{seed}/probe", probe, os.path.join(base, "probe"), after=(f"{variant}_s{seed}/pretrain",)),
          Job(f"{variant}_s{seed}/adapt", adapt, os.path.join(base, "adapt"), after=(f"{variant}_s{seed}/pretrain",))]
      adapted = [f"{variant}_s{seed}/adapt"]
      if small_budgets and ablation_prepared:
        per_model.append(Job(f"{variant}_s{seed}/adapt_ablation", ablation, os.path.join(base, "adapt_ablation"),
                             after=(f"{variant}_s{seed}/pretrain",)))
        adapted.append(f"{variant}_s{seed}/adapt_ablation")
      per_model += [
          Job(f"{variant}_s{seed}/finetune", ft, os.path.join(base, "finetune"),
              after=(f"{variant}_s{seed}/pretrain",)),
          Job(f"{variant}_s{seed}/zero_shot", None, os.path.join(base, "zero_shot"), fn=zs,
              after=(*adapted, f"{variant}_s{seed}/finetune"))]
  return jobs + per_model


def ablation_languages(config) -> list[str]:
  """The zero-shot languages of the low-data ablation (adapted at every budget, not only the largest)."""
  langs = parse_pairs(config.languages, "languages")
  chosen = [l.strip() for l in str(config.ablation_languages).split(",") if l.strip()]
  unknown = [l for l in chosen if l not in langs]
  if unknown:
    raise UserError(f"ablation_languages {unknown} are not zero-shot languages ({', '.join(langs)})")
  return chosen


def zero_shot(config: dict, base: str) -> None:
  """Assembles the task model with every (language, budget) embedding of `adapt` and evaluates it."""
  from rewire import sharding
  from rewire.stages.assemble import assemble_once
  from rewire.stages.evaluate import evaluate_model
  out_dir = os.path.join(base, "zero_shot")
  ev = config["evaluate"]
  mesh = sharding.make_mesh(config["finetune"]["mesh"])
  rules = sharding.rules_from_config(config["finetune"]["mesh"]["rules"])
  tables = {}
  for job in ("adapt", "adapt_ablation"):
    path = os.path.join(base, job, "probe.json")
    if os.path.isfile(path):
      with open(path) as f:
        tables.update(json.load(f)["embeddings"])
  ft = os.path.join(base, "finetune")
  results = {"en": {"full": evaluate_model(ft, ev["test_source"], "en", mesh=mesh, rules=rules,
                                           batch_size=ev["eval_batch_size"], max_examples=ev["max_examples"])}}
  zero_shot_languages = parse_pairs(config["languages"], "languages")
  for key, emb_dir in sorted(tables.items()):
    lang, budget, _ = key.split("/")
    if lang not in zero_shot_languages:
      continue  # the relearned pretraining language has no zero-shot test of its own
    assembled = assemble_once(ft, emb_dir, os.path.join(out_dir, "models", f"{lang}_b{budget}"))
    scores = evaluate_model(assembled, ev["test_source"], lang, mesh=mesh, rules=rules,
                            batch_size=ev["eval_batch_size"], max_examples=ev["max_examples"])
    results.setdefault(lang, {})[budget] = scores
    print(f"[zero_shot] {lang} budget {budget}: {scores}", flush=True)
  rworkdir.write_summary(out_dir, {"finished": True, "results": results})


def run(config, workdir: str) -> dict:
  from rewire import config as rconfig
  rconfig.validate(config)
  if len(set(config.seeds)) != len(config.seeds) or not config.seeds:
    raise UserError(f"study seeds must be distinct and non-empty, got {tuple(config.seeds)}")
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  t0 = time.perf_counter()
  jobs = build_jobs(config, workdir)
  workers = int(config.workers) or (os.cpu_count() or 1)
  timings = run_jobs(jobs, workers=workers, log_dir=os.path.join(workdir, "logs"),
                     pin_cores=bool(config.pin_cores))
  history_path = os.path.join(workdir, "timings.jsonl")
  with open(history_path, "a") as f:
    f.write(json.dumps({"invocation_s": time.perf_counter() - t0, "jobs_s": timings}) + "\n")
  from rewire.study.report import write_study
  summary = write_study(config, workdir)
  rworkdir.write_summary(workdir, {"finished": True, **summary["headline"]})
  return summary
