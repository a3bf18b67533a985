"""The probe's schema: the probe recipe, the `probe` stage around it, their checks, and probing during pretraining.

A *probe recipe* (`probe_recipe`) is everything that decides what a plasticity probe measures: its
languages, token budgets, seeds, updates, batch, the data preparation of its languages, the frozen body's
dropout (by default the body's own, as it was pretrained) and the tables' optimizer. The `probe` stage
(`configs/probe.py`) is a recipe plus the checkpoint it reads; a pretraining run's `probe` group is the
same recipe (with smaller defaults), which `probe_during_pretraining` turns into a probe config, so the
two are never out of step.
"""

from __future__ import annotations

import copy

import ml_collections

from rewire.config.groups import adamw_defaults, data_defaults, mesh_defaults, run_model_defaults, vocab_start_defaults
from rewire.errors import UserError

BODY = -1.0  # a probe's model.dropout / attention_dropout: the value the probed body was pretrained with


def probe_recipe() -> ml_collections.ConfigDict:
  """What a probe measures; the defaults suit the CPU-sized models of the `tiny` presets."""
  c = ml_collections.ConfigDict()
  # NAME=SOURCE pairs (any text source, or prepared:DIR); the pretraining language itself is a fair probe.
  c.languages = "en=bundled:bible_en,es=bundled:bible_es,ja=bundled:bible_ja"
  c.token_budgets = (100_000,)   # each a curve per language: the budget's exact prefix of the training text
  c.seeds = 3                    # seeds seed .. seed+seeds-1: fresh embeddings, batch order, masking, dropout
  c.total_steps = 300            # updates per table
  c.batch_size = 32
  c.eval_every = 25
  c.target_margin = 0.5          # target loss: the language's unigram baseline minus this many nats
  c.targets = ""                 # NAME=LOSS[,NAME=LOSS] overrides of the target
  c.confidence = 0.95            # of the t-intervals over seeds
  c.init_std = 0.02
  # How each table's rows start: comma-separated methods of rewire.vocab (random, mean, overlap, focus, omp,
  # script), each a curve per language, budget and seed; all but random build from the body's own rows
  # and tokenizer, with the `reinit` settings. A start's tables share their seeds' batches, masking and
  # dropout with random's, so the curves differ by the start alone.
  c.inits = "random"
  c.reinit = vocab_start_defaults()
  c.data = data_defaults()
  c.data.update(seq_len=64, vocab_size=4096, max_valid_sequences=128)
  c.model = run_model_defaults()
  # -1 (BODY): the probed body's own dropout, from its model.json (a decoder pretrained without it: 0)
  c.model.update(dropout=BODY, attention_dropout=BODY)
  c.optim = adamw_defaults(lr=2e-3, warmup_steps=30)
  return c


def probe_defaults() -> ml_collections.ConfigDict:
  """Every key of a probe run: a recipe, the checkpoint it probes, and where it runs."""
  c = ml_collections.ConfigDict()
  c.stage = "probe"
  c.init_from = ""               # a rewire workdir (pretraining) or a `python -m rewire.hf import` directory
  c.init_step = 0                # 0: the newest checkpoint
  c.seed = 0
  for key, value in probe_recipe().items():
    c[key] = value
  c.save_embeddings = False      # also write every table as an adapted workdir under embeddings/ (for assemble)
  c.mesh = mesh_defaults()
  return c


def during_pretraining_recipe() -> ml_collections.ConfigDict:
  """A pretraining run's `probe` group: a small recipe, cheap enough to run every `probe_every` updates."""
  c = probe_recipe()
  c.update(languages="en=bundled:bible_en", token_budgets=(50_000,), seeds=1, total_steps=100, eval_every=20)
  c.data.max_valid_sequences = 64
  c.optim.warmup_steps = 10
  return c


def probe_during_pretraining(config) -> ml_collections.ConfigDict:
  """The probe config that pretraining's `probe_every` runs: its `probe` recipe, seeded with the run's seed."""
  c = probe_defaults()
  for key in config.probe:
    c[key] = copy.deepcopy(config.probe[key])
  c.seed = int(config.seed)
  check_probe(c)
  return c


def parse_pairs(entries, what: str) -> dict[str, str]:
  """("es=bundled:bible_es", ...) -> {"es": "bundled:bible_es"}; names must be unique and contain no '/'."""
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


def parse_inits(inits, fallback: str = "random") -> tuple[str, ...]:
  """"random,overlap,focus" (or a sequence) -> ("random", "overlap", "focus"); each a known method, once."""
  from rewire.vocab.recipe import check_names
  names = tuple(n.strip() for n in (inits.split(",") if isinstance(inits, str) else inits) if str(n).strip())
  if not names or len(set(names)) != len(names):
    raise UserError(f"probe inits must name each start method once, got {inits!r}")
  for name in names:
    check_names(name, fallback, what="probe inits entry")
  return names


def curve_name(language: str, init: str, inits) -> str:
  """The name of a probe curve in its results: the language, or language/start when the probe has several
  starts (any but the one `random`)."""
  return language if tuple(inits) == ("random",) else f"{language}/{init}"


def check_probe(config) -> None:
  for key in ("seeds", "total_steps", "batch_size", "eval_every"):
    if int(config[key]) <= 0:
      raise UserError(f"probe {key} must be positive, got {config[key]}")
  if not config.token_budgets or any(int(b) <= 0 for b in config.token_budgets):
    raise UserError(f"probe token_budgets must be positive, got {tuple(config.token_budgets)}")
  if not 0 < float(config.confidence) < 1:
    raise UserError(f"probe confidence must be in (0, 1), got {config.confidence}")
  for key in ("dropout", "attention_dropout"):
    value = float(config.model[key])
    if value != BODY and not 0 <= value < 1:
      raise UserError(f"probe model.{key} must be in [0, 1), or {BODY:g} for the body's own, got {value}")
  parse_pairs(config.languages, "probe languages")
  parse_inits(config.inits, config.reinit.fallback)
  parse_pairs(config.targets, "probe targets")
