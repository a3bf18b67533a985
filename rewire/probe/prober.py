"""`Prober`: measures the plasticity of bodies of one shape on prepared languages, one compile per vocabulary.

It lays out the tables (language x budget x start x seed), groups them by vocabulary size into compiled
`StackedProbe`s, starts each table's rows as its start method says (`inits`: `random`, the paper's draw,
or a method of `rewire.vocab` built from the body's own rows and tokenizer), trains every table on a given
body, and summarises each curve (a language, or with several starts a language/start) and budget over
seeds (`rewire.probe.stats`). The probe stage measures one checkpoint with it; pretraining measures its own body
every `probe_every` updates (`rewire.probe.during`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from rewire import workdir as rworkdir
from rewire.data.tokenizer import load_tokenizer
from rewire.errors import UserError
from rewire.models import registry
from rewire.models.task_model import task_model_config
from rewire.probe import stats as probe_stats
from rewire.config.probe import BODY, curve_name, parse_inits, parse_pairs
from rewire.probe.languages import Language
from rewire.probe.stacked import StackedProbe, Table
from rewire.vocab.recipe import Recipe
from rewire.vocab.start import recipe_between

AUX_METHODS = ("focus", "omp")  # their recipes train on each table's own text and seed


class Prober:
  """Measures the plasticity of bodies of one shape on prepared languages (compiles once per vocabulary)."""

  def __init__(self, cfg, languages: list[Language], model_info: dict, mesh, *, source: str = ""):
    """`source`: the directory of the body's tokenizer, which every start but `random` reads."""
    self.cfg, self.languages, self.mesh = cfg, languages, mesh
    self.inits = parse_inits(cfg.inits, cfg.reinit.fallback)
    self.tables: list[Table] = [Table(l.name, b, s, init) for l in languages for b in l.budgets for init in self.inits
                                for s in range(int(cfg.seed), int(cfg.seed) + int(cfg.seeds))]
    self.data = {l.name: l for l in languages}
    self.recipes = self._recipes(source)
    family = registry.info_family(model_info)
    self.unigram = {l.name: l.unigram(family) for l in languages}
    self.targets = {l.name: self.unigram[l.name] - float(cfg.target_margin) for l in languages}
    for name, value in parse_pairs(cfg.targets, "probe targets").items():
      if name not in self.targets:
        raise UserError(f"probe target for {name!r}, which is not a probe language")
      self.targets[name] = float(value)
    seq_len = int(cfg.data.seq_len)
    if model_info.get("max_position_embeddings", seq_len + 2) < seq_len + family.position_offset:
      raise UserError(f"data.seq_len={seq_len} is too long for the model "
                      f"(max_position_embeddings={model_info['max_position_embeddings']})")
    # One compiled probe per vocabulary size, with the tables it trains.
    self.groups: list[tuple[StackedProbe, list[Table]]] = []
    for vocab in sorted({l.specials.vocab_size for l in languages}):
      members = [t for t in self.tables if self.data[t.language].specials.vocab_size == vocab]
      specials = self.data[members[0].language].specials
      mc = probed_model_config({**model_info, "vocab_size": vocab, "pad_token_id": specials.pad}, cfg.model)
      self.dropout = {"dropout": mc.dropout, "attention_dropout": mc.attention_dropout}
      self.groups.append((StackedProbe(mc, specials, seq_len=seq_len, mask_prob=cfg.data.mask_prob,
                                       optim_cfg=cfg.optim, total_steps=int(cfg.total_steps),
                                       init_std=float(cfg.init_std), mesh=mesh, num_tables=len(members)),
                          members))

  def curve(self, t: Table) -> str:
    """The name of a table's curve in the results: its language, or language/start when several starts run."""
    return curve_name(t.language, t.init, self.inits)

  def _recipes(self, source: str) -> dict[Table, Recipe]:
    """Each table's start recipe (none for `random`): one per language and start, and for `focus` and `omp`
    one per table, whose auxiliary vectors train on its budget's text with its seed."""
    if self.inits == ("random",):
      return {}
    path = rworkdir.tokenizer_path(source) if source else ""
    if not os.path.isfile(path):
      raise UserError(f"probe inits={','.join(self.inits)} builds rows from the body's own, but "
                      f"{source or 'the probe source'} has no {rworkdir.TOKENIZER} (probe with inits=random)")
    old = load_tokenizer(path)
    built, out = {}, {}
    for t in self.tables:
      if t.init == "random":
        continue
      key = (t.language, t.init) + ((t.budget, t.seed) if t.init in AUX_METHODS else ())
      if key not in built:
        lang = self.data[t.language]
        built[key] = recipe_between(t.init, self.cfg.reinit, old, load_tokenizer(lang.tokenizer_path),
                                    lambda: lang.budgets[t.budget].train, seed=t.seed)
      out[t] = built[key]
    return out

  def start_lines(self) -> tuple[list[str], list[str]]:
    """What each start built, a line per curve (its first table's recipe), and the recipes' notes, once each."""
    first, notes = {}, []
    for t, r in self.recipes.items():
      first.setdefault(self.curve(t), r)
      notes += [n for n in r.notes if n not in notes]
    return [f"new rows of {curve}: {r.describe()}" for curve, r in first.items()], notes

  def measure(self, params: Any, *, progress=None, on_update=None) -> tuple[dict, dict]:
    """Trains every table on the body of `params`; returns (results per language/budget, final tables).

    `progress(step, losses)` runs at evaluations, `on_update(train_losses)` after every update.
    """
    curves, finals, steps = {}, {}, None
    for probe, members in self.groups:
      data = [self.data[t.language].budgets[t.budget] for t in members]
      steps, losses, tables = probe.run(params, members, data, batch_size=int(self.cfg.batch_size),
                                        eval_every=int(self.cfg.eval_every), progress=progress, on_update=on_update,
                                        recipes=[self.recipes.get(t) for t in members],
                                        covariance_scale=float(self.cfg.reinit.covariance_scale))
      for t, curve, table in zip(members, losses, tables):
        curves[t], finals[t] = curve, table
    results = {}
    for lang in self.languages:
      for init in self.inits:
        for budget in lang.budgets:
          mine = [t for t in self.tables if (t.language, t.budget, t.init) == (lang.name, budget, init)]
          stats = probe_stats.summarize(steps, np.stack([curves[t] for t in mine]), self.targets[lang.name],
                                        float(self.cfg.confidence))
          start = {"init": init, **({"rows": self.recipes[mine[0]].counts()} if init != "random" else {})}
          results.setdefault(self.curve(mine[0]), {})[str(budget)] = {**stats, "unigram_loss": self.unigram[lang.name],
                                                                      "language": lang.name, **start}
    return results, finals


def probed_model_config(model_info: dict, model_cfg) -> Any:
  """The model config of a probe: the body's, with the probe's `model` settings; a dropout of BODY (-1) keeps
  the body's own, so a body pretrained without dropout (a decoder) is not probed with it."""
  _, body = registry.config_from_info(model_info)
  settings = model_cfg.copy_and_resolve_references()
  for key in ("dropout", "attention_dropout"):
    if float(settings[key]) == BODY:
      settings[key] = float(getattr(body, key))
  return task_model_config(model_info, settings)


def check_mlm_source(init_from: str) -> dict:
  """The model.json of a probe's source, which must be a family's LM (the probe trains through its head)."""
  if not init_from:
    raise UserError("probe needs init_from: a pretrained workdir or a `python -m rewire.hf import` directory")
  if not os.path.isdir(init_from):
    raise UserError(f"init_from {init_from} does not exist")
  info = rworkdir.read_model_info(init_from)
  if not registry.is_lm(registry.info_architecture(info)):
    raise UserError(f"{init_from} holds a {info['architecture']}, which has no LM head to probe through; "
                    f"probe the pretrained model it came from")
  return info
