"""The schema of pretraining and language adaptation: every key, its default, and the check of its values.

Both stages run the same masked-LM training (`rewire.stages.pretrain`); language adaptation is pretraining's
recipe without clipping or resets, over a token budget of a new language, with only the token embeddings
trainable. `check_pretrain` checks what the config alone can tell (the stage checks what needs the
devices or the filesystem).
"""

from __future__ import annotations

import ml_collections

from rewire.config import probe as probe_schema
from rewire.config.groups import (adamw_defaults, data_defaults, forget_defaults, mesh_defaults, model_defaults,
                                  vocab_start_defaults)
from rewire.errors import UserError


def pretrain_defaults() -> ml_collections.ConfigDict:
  """Every key a pretraining run reads, with the paper's recipe (RoBERTa-base) as the default values."""
  c = ml_collections.ConfigDict()
  c.stage = "pretrain"
  c.seed = 0
  c.total_steps = 125_000        # optimizer updates
  c.forget_every = 1000          # K; 0 turns forgetting off (the standard baseline)
  c.batch_size = 2048            # global batch, in sequences

  c.log_every = 100              # metrics.jsonl record + progress line
  c.eval_every = 5000            # validation loss
  c.checkpoint_every = 5000
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  c.peak_flops = 0.0             # per-device peak FLOP/s for MFU; 0: look the device up (unknown on CPU)

  # Warm start: begin from another run's params (a rewire workdir, or `python -m rewire.hf import` output).
  c.init_from = ""               # "": random init
  c.init_step = 0                # 0: the newest checkpoint of init_from
  c.reinit = ml_collections.ConfigDict(dict(
      pattern="",                # leaves drawn afresh instead of loaded: a regex over param paths or a name of
                                 # rewire.models.registry.LEAF_SETS (2-D: N(0, init_std), RoBERTa's pad row 0; 1-D: 0)
      init_std=0.02,
      # How the new vocabulary rows start (rewire.vocab): random (the paper's N(0, init_std)), mean (the
      # old rows' mean and covariance), overlap (copy the rows of shared pieces), focus (FOCUS), omp
      # (orthogonal matching pursuit over shared pieces), script (the mean of the old rows of the same script).
      method="random",
      # "new": the rows copied from the source (shared pieces, special tokens) keep their values exactly and
      # the others train; "all": every row trains; "": new when extending, all otherwise
      train_rows=""))
  c.reinit.update(vocab_start_defaults())  # the methods' settings
  # Keep the source's tokenizer and rows and add the new language's pieces that it cannot spell, instead of
  # replacing the vocabulary (rewire.vocab.extend): old text keeps its ids. Needs a raw data.source.
  c.extend = False
  c.token_budget = 0             # >0: train on the shortest prefix of the corpus with this many tokens, repeated
  # Plasticity during pretraining: every probe_every updates, probe the current body with the `probe`
  # recipe (see rewire/config/probe.py); results go to plasticity.jsonl and plasticity.png. 0: never.
  c.probe_every = 0
  c.probe = probe_schema.during_pretraining_recipe()

  c.model = model_defaults()
  c.data = data_defaults()
  c.optim = adamw_defaults()
  c.optim.clip_norm = 0.5        # global-norm clip; 0 disables
  c.optim.rules = ((".*", "train"),)  # (param-path regex or LEAF_SETS name, "train" | "frozen"); first match wins
  c.forget = forget_defaults()
  c.mesh = mesh_defaults()
  return c


def adapt_language_defaults() -> ml_collections.ConfigDict:
  """Language adaptation (Chen et al. 2023, step 2): a new tokenizer and new token embeddings, body frozen.

  The recipe is pretraining's without clipping or resets, over a token budget of the new language.
  """
  c = pretrain_defaults()
  c.stage = "adapt_language"
  c.forget_every = 0
  c.token_budget = 5_000_000
  c.data.source = ""             # the new language's corpus (required)
  c.optim.clip_norm = 0.0
  # Only the LM's vocabulary matrices train: the token embeddings (RoBERTa: also its tied decoder; a
  # decoder: and its untied output head). Body, positions and the LM bias (re-initialised to 0) stay frozen.
  c.optim.rules = (("embeddings", "train"), (".*", "frozen"))
  c.reinit.pattern = "vocab"     # every vocabulary-sized leaf is drawn afresh for the new tokenizer
  return c


def check_pretrain(config) -> None:
  """The values of a pretraining or adaptation config (its keys are checked against the defaults first)."""
  if config.total_steps <= 0:
    raise UserError(f"total_steps must be positive, got {config.total_steps}")
  from rewire.vocab.recipe import check_names
  check_names(config.reinit.method, config.reinit.fallback)
  if config.reinit.method != "random" and not config.init_from:
    raise UserError(f"reinit.method={config.reinit.method} builds the new rows from a source model's rows; "
                    f"set init_from")
  if config.reinit.train_rows not in ("", "new", "all"):
    raise UserError(f"reinit.train_rows must be new, all or empty (new when extending), got "
                    f"{config.reinit.train_rows!r}")
  if config.extend and (not config.init_from or str(config.data.source).startswith("prepared:")):
    raise UserError("extend adds pieces to the tokenizer of init_from and encodes data.source with the result: "
                    "set init_from, and a raw text source (not prepared:DIR)")
  if config.forget_every < 0:
    raise UserError(f"forget_every must be >= 0 (0 turns forgetting off), got {config.forget_every}")
  if config.stage == "adapt_language":
    if not config.init_from:
      raise UserError("adapt_language needs init_from: the workdir of a pretrained model")
    if not config.data.source:
      raise UserError("adapt_language needs data.source: the new language's corpus")
    if config.forget_every:
      raise UserError("adapt_language does not reset embeddings: set forget_every=0")
  for key in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
    if config[key] <= 0:
      raise UserError(f"{key} must be positive, got {config[key]}")
  if not 0.0 < config.data.mask_prob < 1.0:
    raise UserError(f"data.mask_prob must be in (0, 1), got {config.data.mask_prob}")
  if not config.optim.lr > 0:
    raise UserError(f"optim.lr must be positive, got {config.optim.lr}")
  if config.forget.until < 0 or not config.forget.init_std > 0:
    raise UserError("forget.until must be >= 0 (0: reset to the end) and forget.init_std positive")
  if config.optim.warmup_steps < 0 or config.optim.clip_norm < 0:
    raise UserError("optim.warmup_steps and optim.clip_norm must be >= 0")
  if config.probe_every > 0:
    probe_schema.probe_during_pretraining(config)  # checks the probe recipe's values
