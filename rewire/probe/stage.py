"""The plasticity probe: how fast does a frozen body let fresh token embeddings learn each language?

`python -m rewire.main --config=configs/probe.py --workdir=runs/probe --config.init_from=runs/forget`

For every probe language (any text source, the pretraining language included) the probe takes a fresh
tokenizer, and for every token budget and seed a fresh N(0, init_std) embedding table; it trains only the
tables, on the frozen body of `init_from` (a rewire workdir at `init_step`, or a `python -m rewire.hf
import` directory), for a fixed number of updates, and records validation MLM loss along the way. All
tables run together in one compiled step (`rewire.probe.stacked`). Per language and budget it reports, as
the mean and a t-interval over seeds: the adaptation curve, the updates needed to reach a target loss
(the language's unigram baseline minus `target_margin`, unless `targets` says otherwise), the area under
the curve and the final loss (`rewire.probe.stats`), in `probe.json`, `probe.md` and `probe.png`.

`Prober` is the reusable part: it prepares the languages once and measures any number of bodies of one
shape, which is how pretraining probes itself every `probe_every` updates (`plasticity.png`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
from typing import Any

import jax
import ml_collections
import numpy as np

from rewire import config as rconfig
from rewire.models import heads
from rewire.probe import stats as probe_stats
from rewire import sharding
from rewire import workdir as rworkdir
from rewire.checkpoint import load_params
from rewire.data.batches import budget_prefix
from rewire.data.run_data import open_corpus
from rewire.data.tokenizer import load_tokenizer, special_ids
from rewire.errors import UserError
from rewire.fileio import write_json_atomic
from rewire.models.mlm import unigram_loss
from rewire.probe.stacked import StackedProbe, Table, TableData
from rewire.models.task_model import task_model_config


def parse_pairs(entries, what: str) -> dict[str, str]:
  """("es=bundled:bible_es", ...) -> {"es": "bundled:bible_es"}; a bare source is named by itself."""
  if isinstance(entries, str):
    entries = [e for e in entries.split(",") if e.strip()]
  out = {}
  for e in entries:
    name, sep, value = str(e).partition("=")
    if not sep:
      raise UserError(f"{what} entry {e!r} is not NAME=VALUE (e.g. es=bundled:bible_es)")
    name = name.strip()
    if not name or "/" in name or name in out:
      raise UserError(f"{what} entry {e!r}: the name must be non-empty, unique and contain no '/'")
    out[name] = value.strip()
  return out


@dataclasses.dataclass
class Language:
  name: str
  tokenizer_path: str
  specials: Any
  unigram: float                   # the language's unigram baseline on its validation sequences
  budgets: dict[int, TableData]    # token budget -> the data of its tables


def prepare_languages(cfg, root: str, *, log_stream=None) -> list[Language]:
  """Prepares (once) and reads every probe language at every token budget; one-line errors name it."""
  out = []
  for name, source in parse_pairs(cfg.languages, "probe languages").items():
    dcfg = copy.deepcopy(cfg.data)
    dcfg.source = source
    try:
      corpus = open_corpus(dcfg, os.path.join(root, name), log_stream=log_stream)
    except UserError as e:
      raise UserError(f"probe language {name} ({source}): {e}") from None
    specials = special_ids(load_tokenizer(corpus.tokenizer_path))
    valid = corpus.read("valid", 0, int(dcfg.max_valid_sequences) or corpus.num_sequences("valid"))
    if len(valid) == 0:
      raise UserError(f"probe language {name} ({source}) has no validation sequences")
    budgets = {}
    # The language's baseline from all its training text, so it does not depend on the budgets probed.
    unigram = unigram_loss(corpus.unigram_counts(), valid, 4, specials.mask)
    for budget in sorted(int(b) for b in cfg.token_budgets):
      try:
        n, _ = budget_prefix(corpus, budget, cfg.batch_size)
      except UserError as e:
        raise UserError(f"probe language {name} ({source}): {e}; lower token_budgets or give it more "
                        "text") from None
      budgets[budget] = TableData(train=corpus.read("train", 0, n), valid=valid)
    out.append(Language(name, corpus.tokenizer_path, specials, unigram, budgets))
  return out


class Prober:
  """Measures the plasticity of bodies of one shape on prepared languages (compiles once per vocabulary)."""

  def __init__(self, cfg, languages: list[Language], model_info: dict, mesh):
    self.cfg, self.languages, self.mesh = cfg, languages, mesh
    self.tables: list[Table] = [Table(l.name, b, s) for l in languages for b in l.budgets
                                for s in range(int(cfg.seed), int(cfg.seed) + int(cfg.seeds))]
    self.data = {l.name: l for l in languages}
    self.targets = {l.name: l.unigram - float(cfg.target_margin) for l in languages}
    for name, value in parse_pairs(cfg.targets, "probe targets").items():
      if name not in self.targets:
        raise UserError(f"probe target for {name!r}, which is not a probe language")
      self.targets[name] = float(value)
    seq_len = int(cfg.data.seq_len)
    if model_info.get("max_position_embeddings", seq_len + 2) < seq_len + 2:
      raise UserError(f"data.seq_len={seq_len} is too long for the model "
                      f"(max_position_embeddings={model_info['max_position_embeddings']})")
    # One compiled probe per vocabulary size, with the tables it trains.
    self.groups: list[tuple[StackedProbe, list[Table]]] = []
    for vocab in sorted({l.specials.vocab_size for l in languages}):
      members = [t for t in self.tables if self.data[t.language].specials.vocab_size == vocab]
      specials = self.data[members[0].language].specials
      mc = task_model_config({**model_info, "vocab_size": vocab, "pad_token_id": specials.pad}, cfg.model)
      self.groups.append((StackedProbe(mc, specials, seq_len=seq_len, mask_prob=cfg.data.mask_prob,
                                       optim_cfg=cfg.optim, total_steps=int(cfg.total_steps),
                                       init_std=float(cfg.init_std), mesh=mesh, num_tables=len(members)),
                          members))

  def measure(self, params: Any, *, progress=None) -> tuple[dict, dict]:
    """Trains every table on the body of `params`; returns (results per language/budget, final tables)."""
    curves, finals, steps = {}, {}, None
    for probe, members in self.groups:
      data = [self.data[t.language].budgets[t.budget] for t in members]
      steps, losses, tables = probe.run(params, members, data, batch_size=int(self.cfg.batch_size),
                                        eval_every=int(self.cfg.eval_every), progress=progress)
      for t, curve, table in zip(members, losses, tables):
        curves[t], finals[t] = curve, table
    results = {}
    for lang in self.languages:
      for budget in lang.budgets:
        mine = [t for t in self.tables if t.language == lang.name and t.budget == budget]
        stats = probe_stats.summarize(steps, np.stack([curves[t] for t in mine]), self.targets[lang.name],
                                      float(self.cfg.confidence))
        results.setdefault(lang.name, {})[str(budget)] = {**stats, "unigram_loss": lang.unigram}
    return results, finals


def check_mlm_source(init_from: str) -> dict:
  """The model.json of a probe's source, which must be a masked LM (the probe trains through its head)."""
  if not init_from:
    raise UserError("probe needs init_from: a pretrained workdir or a `python -m rewire.hf import` directory")
  if not os.path.isdir(init_from):
    raise UserError(f"init_from {init_from} does not exist")
  info = rworkdir.read_model_info(init_from)
  if info.get("architecture", heads.MLM) != heads.MLM:
    raise UserError(f"{init_from} holds a {info['architecture']}, which has no MLM head to probe through; "
                    f"probe the pretrained model it came from")
  return info


def run(config, workdir: str, *, log_stream=None) -> dict:
  """The `probe` stage: probes `config.init_from` and writes probe.json, probe.md and probe.png."""
  from rewire.probe.report import write_report
  rconfig.validate(config)
  _check(config)
  info = check_mlm_source(config.init_from)
  params, step = load_params(config.init_from, config.init_step or None)
  mesh = sharding.make_mesh(config.mesh)
  stream = log_stream or sys.stdout
  with rworkdir.locked(workdir):
    languages = prepare_languages(config, os.path.join(workdir, "languages"), log_stream=log_stream)
    prober = Prober(config, languages, info, mesh)
    print(f"[probe] {config.init_from} at step {step}: {len(prober.tables)} tables "
          f"({len(languages)} languages x {len(config.token_budgets)} budgets x {config.seeds} seeds), "
          f"{config.total_steps} updates", file=stream, flush=True)

    def progress(s, losses):
      if s % max(int(config.eval_every), int(config.total_steps) // 10) == 0 or s == config.total_steps:
        print(f"[probe] update {s}/{config.total_steps}: mean valid loss {float(np.mean(losses)):.3f}",
              file=stream, flush=True)

    results, finals = prober.measure(params, progress=progress)
    out = {"init_from": os.path.abspath(config.init_from), "step": int(step), "results": results,
           "total_steps": int(config.total_steps), "seeds": int(config.seeds),
           "confidence": float(config.confidence), "token_budgets": [int(b) for b in config.token_budgets]}
    if config.save_embeddings:
      out["embeddings"] = save_embeddings(params, finals, languages, info, workdir)
    write_json_atomic(os.path.join(workdir, "probe.json"), out)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    write_report(out, workdir)
    rworkdir.write_summary(workdir, {"step": int(step), "finished": True,
                                     "final_loss": {l: {b: r["final_loss"]["mean"] for b, r in per.items()}
                                                    for l, per in results.items()}})
  return out


def save_embeddings(params: Any, finals: dict, languages: list[Language], info: dict, workdir: str) -> dict:
  """Writes each table as a language-adapted workdir (body + new embedding + tokenizer) for `assemble`."""
  from rewire.probe.stacked import BIAS_PATH, EMBEDDING_PATH, _set
  host = jax.device_get(params)
  by_name = {l.name: l for l in languages}
  written = {}
  for t, table in finals.items():
    out = os.path.join(workdir, "embeddings", f"{t.language}_b{t.budget}_s{t.seed}")
    p = _set(_set(host, EMBEDDING_PATH, np.asarray(table)), BIAS_PATH, np.zeros(table.shape[0], np.float32))
    lang = by_name[t.language]
    rworkdir.copy_tokenizer(lang.tokenizer_path, out)
    rworkdir.write_model_info(out, {**info, "architecture": heads.MLM, "vocab_size": int(table.shape[0]),
                                    "pad_token_id": lang.specials.pad})
    rworkdir.write_params(out, p, note={"probe_table": dataclasses.asdict(t)})
    rworkdir.write_summary(out, {"finished": True, "probe_table": dataclasses.asdict(t)})
    written[f"{t.language}/{t.budget}/{t.seed}"] = out
  return written


def _check(config) -> None:
  for key in ("seeds", "total_steps", "batch_size", "eval_every"):
    if int(config[key]) <= 0:
      raise UserError(f"probe {key} must be positive, got {config[key]}")
  if not config.token_budgets or any(int(b) <= 0 for b in config.token_budgets):
    raise UserError(f"probe token_budgets must be positive, got {tuple(config.token_budgets)}")
  if not 0 < float(config.confidence) < 1:
    raise UserError(f"probe confidence must be in (0, 1), got {config.confidence}")
  parse_pairs(config.languages, "probe languages")


def results_line(results: dict) -> str:
  """One line per probe: each language's final loss at its largest budget (for progress logs)."""
  parts = []
  for lang, per in results.items():
    b = max(per, key=int)
    parts.append(f"{lang} {per[b]['final_loss']['mean']:.3f}")
  return ", ".join(parts)


def merged_config(overrides) -> ml_collections.ConfigDict:
  """`probe_defaults()` with a (partial) probe group laid over it, e.g. a pretraining config's `probe`."""
  from rewire.config import probe_defaults
  c = probe_defaults()

  def merge(dst, src):
    for k, v in src.items():
      if isinstance(v, (dict, ml_collections.ConfigDict)) and isinstance(dst.get(k), ml_collections.ConfigDict):
        merge(dst[k], v)
      else:
        dst[k] = v
  merge(c, overrides)
  return c


class DuringPretraining:
  """`probe_every`: probes a pretraining run's current body; appends to plasticity.jsonl, plots plasticity.png.

  The probe reads the parameters and nothing else, so the run's trajectory (and its bit-identical resume)
  does not depend on it; a resumed run skips the steps already recorded.
  """

  def __init__(self, config, workdir: str, model_config, mesh, *, is_main: bool, log_stream=None):
    self.cfg = merged_config(config.probe)
    self.cfg.seed = int(config.seed)
    self.workdir, self.is_main, self.stream = workdir, is_main, log_stream or sys.stdout
    self.path = os.path.join(workdir, "plasticity.jsonl")
    _check(self.cfg)
    languages = prepare_languages(self.cfg, os.path.join(workdir, "probe_data"), log_stream=log_stream)
    self.prober = Prober(self.cfg, languages, dataclasses.asdict(model_config), mesh)

  def __call__(self, step: int, state) -> None:
    from rewire.probe.report import plot_plasticity
    from rewire.telemetry import read_records
    records = read_records(self.path)
    if any(r.get("step") == step for r in records):
      return
    results, _ = self.prober.measure(state["params"])
    if not self.is_main:
      return
    records.append({"step": int(step), "results": results})
    with open(self.path, "a") as f:
      f.write(json.dumps(records[-1]) + "\n")
    print(f"[probe] at update {step}: final probe loss {results_line(results)}", file=self.stream, flush=True)
    resets = [r["step"] for r in read_records(os.path.join(self.workdir, "metrics.jsonl"))
              if r.get("event") == "forget"]
    plot_plasticity(records, os.path.join(self.workdir, "plasticity.png"), resets=resets)
