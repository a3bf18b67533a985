"""The plasticity study: pretraining variants against the standard one, several seeds, carried to a zero-shot task.

`python -m rewire.main --config=configs/study.py --workdir=runs/study`

The study is a graph of steps (`rewire.steps`), run on Ray; every step is an ordinary stage run (or the
zero-shot test) in a directory of its own, named by the step and a hash of its config and inputs, so an
interrupted study resumes where it stopped, a changed key reruns exactly the steps it reaches, and every
model it makes can be inspected, probed or exported on its own:

    data/<name>-<hash>                      prepared corpora (English pretraining text, each probe language)
    <variant>_s<seed>/pretrain-<hash>       pretraining (variant: each of `variants`)
    <variant>_s<seed>/probe-<hash>          plasticity: fresh embeddings per language and token budget on the
                                            frozen body, `probe.total_steps` updates, curves
    <variant>_s<seed>/adapt-<hash>          the language adaptation for the zero-shot test: the probe's recipe
                                            on the zero-shot languages at the largest budget, `adapt_steps`
                                            updates, tables saved under adapt/embeddings/
    <variant>_s<seed>/adapt_ablation-<hash> the same for `ablation_languages` at the smaller budgets
    <variant>_s<seed>/finetune-<hash>       the English task model (body trained, embeddings frozen)
    <variant>_s<seed>/zero_shot-<hash>      the task model assembled with each language's embeddings, evaluated
    logs/, graph.json                       each step's log; every step's directory, hash and state
    study.json, study.md, *.png             the statistics (`rewire.study.report`), read through the graph

The step names are spelt once, in `rewire.study.layout`; the variants' recipe is `rewire.config.variants`.
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
from rewire.config.variants import BASELINE, pretrain_config
from rewire.stages.assemble import assemble_once
from rewire.stages.evaluate import evaluate_model
from rewire.study import layout
from rewire.study.layout import ablation_languages
from rewire.study.report import REPORT_FILES, write_study
from rewire.steps.cluster import Settings, step_resources
from rewire.steps.engine import run_graph
from rewire.steps.graph import Graph
from rewire.steps.step import Step, ref


def _prepare_step(corpus: str, source: str, data_cfg, kind: str, resources: dict) -> Step:
  c = prepare_defaults()
  c.data = copy.deepcopy(data_cfg)
  c.data.source = source
  return Step(layout.data_name(corpus), c, kind=kind, resources=resources)


def build_steps(config) -> list[Step]:
  """Every step of the study, in an order that keeps the workers busy."""
  L = layout
  resources, pretrain_resources = step_resources(config)
  # The data steps have kinds of their own: "data/pretrain" is no pretraining run (the ETA's unit is a kind).
  steps = [_prepare_step(L.PRETRAIN_CORPUS, config.pretrain.data.source, config.pretrain.data,
                         "prepare pretraining corpus", resources)]
  languages = L.all_languages(config)
  for name, source in languages.items():
    steps.append(_prepare_step(name, source, config.probe.data, "prepare probe corpus", resources))
  prepared = L.prepared(languages)
  zero_shot_prepared = L.prepared(L.zero_shot_languages(config))
  ablation_prepared = L.prepared(ablation_languages(config))
  budgets = sorted(int(b) for b in config.probe.token_budgets)
  main_budget, small_budgets = budgets[-1], tuple(budgets[:-1])
  per_model = []
  for seed in config.seeds:
    for variant in config.variants:
      name = functools.partial(L.job_name, variant, seed)  # name(job): this model's step of that name
      step = functools.partial(Step, resources=resources)
      pre = pretrain_config(config.pretrain, variant, seed=seed, forget_every=config.forget_every,
                            clip_norm=config.forget_clip_norm, until=config.forget_until,
                            weight_decay=config.weight_decay)
      pre.data.source = f"prepared:{ref(L.data_name(L.PRETRAIN_CORPUS))}"
      if variant == BASELINE or int(seed) != int(config.seeds[0]):
        pre.probe_every = 0  # probes during pretraining: the first seed of each variant only
      steps.append(Step(name(L.PRETRAIN), pre, resources=pretrain_resources, hosts=int(config.pretrain_hosts),
                        resumes=True))
      probe = copy.deepcopy(config.probe)
      probe.update(init_from=ref(name(L.PRETRAIN)), seed=int(seed), seeds=1, languages=prepared)
      # The embeddings for the zero-shot test: the same recipe, trained longer, zero-shot languages only.
      adapt = copy.deepcopy(probe)
      adapt.update(languages=zero_shot_prepared, token_budgets=(main_budget,), total_steps=int(config.adapt_steps),
                   eval_every=max(1, int(config.adapt_steps) // 10), save_embeddings=True)
      ablation = copy.deepcopy(adapt)
      ablation.update(languages=ablation_prepared, token_budgets=small_budgets)
      ft = copy.deepcopy(config.finetune)
      ft.update(init_from=ref(name(L.PRETRAIN)), seed=int(seed))
      probe.save_embeddings = L.PROBE in L.adapted_jobs(config)
      per_model.append(step(name(L.PROBE), probe))
      adapted = [name(L.PROBE)] if probe.save_embeddings else [name(L.ADAPT)]
      if not probe.save_embeddings:
        per_model.append(step(name(L.ADAPT), adapt))
        if small_budgets and ablation_prepared:
          per_model.append(step(name(L.ADAPT_ABLATION), ablation))
          adapted.append(name(L.ADAPT_ABLATION))
      per_model += [step(name(L.FINETUNE), ft),
                    step(name(L.ZERO_SHOT), zero_shot_config(config, name(L.FINETUNE), adapted), entry=ZERO_SHOT_ENTRY)]
  return steps + per_model


ZERO_SHOT_ENTRY = "rewire.study.graph:zero_shot"


def zero_shot_config(config, finetune: str, adapted) -> dict:
  """The zero-shot step's config: the task model, the adaptations whose tables it reads, the tests."""
  languages = layout.zero_shot_languages(config)
  return {"finetune": ref(finetune), "adapted": [ref(a) for a in adapted],
          "tests": {lang: list(layout.test_set(config, lang)) for lang in languages},
          "evaluate": dict(config.evaluate.to_dict()), "mesh": config.finetune.mesh.to_dict()}


def zero_shot(config: dict, workdir: str) -> dict:
  """Assembles the task model with every (curve, budget) embedding of the adaptations and evaluates it."""
  ev = config["evaluate"]
  mesh = sharding.make_mesh(config["mesh"])
  rules = sharding.rules_from_config(config["mesh"]["rules"])
  tables = {}
  for adapted in config["adapted"]:
    with open(os.path.join(adapted, "probe.json")) as f:
      tables.update(json.load(f).get("embeddings", {}))
  ft = config["finetune"]
  results = {"en": {"full": evaluate_model(ft, ev["test_source"], "en", mesh=mesh, rules=rules,
                                           batch_size=ev["eval_batch_size"], max_examples=ev["max_examples"])}}
  for key, emb_dir in sorted(tables.items()):
    curve, budget, _ = key.rsplit("/", 2)  # curve: a language, or language/start (layout.curves)
    if layout.language_of(curve) not in config["tests"]:
      continue  # a probe-only language has no zero-shot test of its own
    assembled = assemble_once(ft, emb_dir, os.path.join(workdir, "models", f"{curve.replace('/', '_')}_b{budget}"))
    source, test_lang = config["tests"][layout.language_of(curve)]
    scores = evaluate_model(assembled, source, test_lang, mesh=mesh, rules=rules,
                            batch_size=ev["eval_batch_size"], max_examples=ev["max_examples"])
    results.setdefault(curve, {})[budget] = scores
    print(f"[zero_shot] {curve} budget {budget}: {scores}", flush=True)
  summary = {"finished": True, "results": results}
  rworkdir.write_summary(workdir, summary)
  return summary


def study_graph(config, root: str) -> Graph:
  return Graph(build_steps(config), root)


def run(config, workdir: str) -> dict:
  rconfig.validate(config)
  graph = study_graph(config, workdir)
  settings = Settings.from_config(config, "study")
  if config.dry_run:
    run_graph(graph, settings, dry_run=True)
    return {"dry_run": True}
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  t0 = time.perf_counter()
  timings = run_graph(graph, settings)
  with open(os.path.join(workdir, layout.TIMINGS), "a") as f:
    f.write(json.dumps({"invocation_s": time.perf_counter() - t0, "jobs_s": timings}) + "\n")
  summary = write_study(config, workdir, graph.dirs)
  if config.report_dir:  # e.g. results/study_cpu: the report without the models
    os.makedirs(config.report_dir, exist_ok=True)
    for name in REPORT_FILES:
      if os.path.isfile(os.path.join(workdir, name)):
        shutil.copyfile(os.path.join(workdir, name), os.path.join(config.report_dir, name))
  rworkdir.write_summary(workdir, {"finished": True, **summary["headline"]})
  return summary
