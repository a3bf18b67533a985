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

The paths are spelt once, in `rewire.study.layout`; the variants' recipe is `rewire.config.variants`.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import time

from rewire import config as rconfig
from rewire import sharding
from rewire import workdir as rworkdir
from rewire.config import prepare_defaults
from rewire.config.variants import VARIANTS, pretrain_config
from rewire.data.corpus import MANIFEST
from rewire.errors import UserError
from rewire.stages.assemble import assemble_once
from rewire.stages.evaluate import evaluate_model
from rewire.study import layout
from rewire.study.jobs import Job, run_jobs
from rewire.study.layout import ablation_languages
from rewire.study.report import REPORT_FILES, write_study


def _prepare_job(root: str, corpus: str, source: str, data_cfg, kind: str) -> Job:
  c = prepare_defaults()
  c.data = copy.deepcopy(data_cfg)
  c.data.source = source
  return Job(layout.data_name(corpus), c, layout.data_dir(root, corpus), kind=kind,
             complete=lambda d: os.path.isfile(os.path.join(d, MANIFEST)))


def build_jobs(config, root: str) -> list[Job]:
  """Every job of the study, in an order that keeps two workers busy."""
  L = layout
  # The data jobs have kinds of their own: "data/pretrain" is no pretraining run (the ETA's unit is a kind).
  jobs = [_prepare_job(root, L.PRETRAIN_CORPUS, config.pretrain.data.source, config.pretrain.data,
                       "prepare pretraining corpus")]
  languages = L.all_languages(config)
  for name, source in languages.items():
    jobs.append(_prepare_job(root, name, source, config.probe.data, "prepare probe corpus"))
  data_jobs = tuple(j.name for j in jobs)
  prepared = L.prepared(root, languages)
  zero_shot_prepared = L.prepared(root, L.zero_shot_languages(config))
  ablation_prepared = L.prepared(root, ablation_languages(config))
  budgets = sorted(int(b) for b in config.probe.token_budgets)
  main_budget, small_budgets = budgets[-1], tuple(budgets[:-1])
  per_model = []
  for seed in config.seeds:
    for variant in VARIANTS:
      name = functools.partial(L.job_name, variant, seed)  # name(job): this model's job of that name
      at = functools.partial(L.job_dir, root, variant, seed)  # at(job): its workdir
      pre = pretrain_config(config.pretrain, variant, seed=seed, forget_every=config.forget_every,
                            clip_norm=config.forget_clip_norm, until=config.forget_until)
      pre.data.source = f"prepared:{L.data_dir(root, L.PRETRAIN_CORPUS)}"
      if variant == "standard" or int(seed) != int(config.seeds[0]):
        pre.probe_every = 0  # probes during pretraining: the first seed of each variant only
      jobs.append(Job(name(L.PRETRAIN), pre, at(L.PRETRAIN), after=data_jobs))
      probe = copy.deepcopy(config.probe)
      probe.update(init_from=at(L.PRETRAIN), seed=int(seed), seeds=1, languages=prepared)
      # The embeddings for the zero-shot test: the same recipe, trained longer, zero-shot languages only.
      adapt = copy.deepcopy(probe)
      adapt.update(languages=zero_shot_prepared, token_budgets=(main_budget,), total_steps=int(config.adapt_steps),
                   eval_every=max(1, int(config.adapt_steps) // 10), save_embeddings=True)
      ablation = copy.deepcopy(adapt)
      ablation.update(languages=ablation_prepared, token_budgets=small_budgets)
      ft = copy.deepcopy(config.finetune)
      ft.update(init_from=at(L.PRETRAIN), seed=int(seed))
      zs = functools.partial(zero_shot, config.to_dict(), L.model_dir(root, variant, seed))
      after_pretrain = (name(L.PRETRAIN), *data_jobs)  # a resumed study may have new corpora to prepare
      probe.save_embeddings = L.PROBE in L.adapted_jobs(config)
      per_model.append(Job(name(L.PROBE), probe, at(L.PROBE), after=after_pretrain))
      adapted = [name(L.PROBE)] if probe.save_embeddings else [name(L.ADAPT)]
      if not probe.save_embeddings:
        per_model.append(Job(name(L.ADAPT), adapt, at(L.ADAPT), after=after_pretrain))
        if small_budgets and ablation_prepared:
          per_model.append(Job(name(L.ADAPT_ABLATION), ablation, at(L.ADAPT_ABLATION), after=after_pretrain))
          adapted.append(name(L.ADAPT_ABLATION))
      per_model += [Job(name(L.FINETUNE), ft, at(L.FINETUNE), after=after_pretrain),
                    Job(name(L.ZERO_SHOT), None, at(L.ZERO_SHOT), fn=zs, after=(*adapted, name(L.FINETUNE)))]
  return jobs + per_model


def zero_shot(config: dict, base: str) -> None:
  """Assembles the task model with every (language, budget) embedding of the adaptations and evaluates it."""
  L = layout
  out_dir = os.path.join(base, L.ZERO_SHOT)
  ev = config["evaluate"]
  mesh = sharding.make_mesh(config["finetune"]["mesh"])
  rules = sharding.rules_from_config(config["finetune"]["mesh"]["rules"])
  tables = {}
  for job in L.adapted_jobs(config):
    path = os.path.join(base, job, "probe.json")
    if os.path.isfile(path):
      with open(path) as f:
        tables.update(json.load(f).get("embeddings", {}))
  ft = os.path.join(base, L.FINETUNE)
  results = {"en": {"full": evaluate_model(ft, ev["test_source"], "en", mesh=mesh, rules=rules,
                                           batch_size=ev["eval_batch_size"], max_examples=ev["max_examples"])}}
  zero_shot_languages = L.zero_shot_languages(config)
  for key, emb_dir in sorted(tables.items()):
    lang, budget, _ = key.split("/")
    if lang not in zero_shot_languages:
      continue  # a probe-only language has no zero-shot test of its own
    assembled = assemble_once(ft, emb_dir, os.path.join(out_dir, "models", f"{lang}_b{budget}"))
    source, test_lang = L.test_set(config, lang)
    scores = evaluate_model(assembled, source, test_lang, mesh=mesh, rules=rules,
                            batch_size=ev["eval_batch_size"], max_examples=ev["max_examples"])
    results.setdefault(lang, {})[budget] = scores
    print(f"[zero_shot] {lang} budget {budget}: {scores}", flush=True)
  rworkdir.write_summary(out_dir, {"finished": True, "results": results})


def run(config, workdir: str) -> dict:
  rconfig.validate(config)
  if len(set(config.seeds)) != len(config.seeds) or not config.seeds:
    raise UserError(f"study seeds must be distinct and non-empty, got {tuple(config.seeds)}")
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  t0 = time.perf_counter()
  jobs = build_jobs(config, workdir)
  workers = int(config.workers) or (os.cpu_count() or 1)
  timings = run_jobs(jobs, workers=workers, log_dir=os.path.join(workdir, layout.LOGS),
                     pin_cores=bool(config.pin_cores))
  with open(os.path.join(workdir, layout.TIMINGS), "a") as f:
    f.write(json.dumps({"invocation_s": time.perf_counter() - t0, "jobs_s": timings}) + "\n")
  summary = write_study(config, workdir)
  if config.report_dir:  # e.g. results/study_cpu: the report without the models
    os.makedirs(config.report_dir, exist_ok=True)
    for name in REPORT_FILES:
      if os.path.isfile(os.path.join(workdir, name)):
        shutil.copyfile(os.path.join(workdir, name), os.path.join(config.report_dir, name))
  rworkdir.write_summary(workdir, {"finished": True, **summary["headline"]})
  return summary
