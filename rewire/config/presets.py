"""The presets of every stage: `tiny` (CPU-sized, on the bundled data) and `base` (the paper's recipe).

Config files in `configs/` pick a preset with a colon (`configs/pretrain_forget.py:base`); these functions
build them from the stages' schemas, so a preset only says what it changes. A family suffix
(`:tiny-llama`, `:base-llama`) gives the same recipe for another registered family's model.
"""

from __future__ import annotations

import ml_collections

from rewire.config.finetune import finetune_defaults
from rewire.config.groups import model_defaults
from rewire.config.pipeline import pipeline_defaults
from rewire.config.pretrain import adapt_language_defaults, pretrain_defaults
from rewire.errors import UserError
from rewire.models import registry
from rewire.tasks.names import GENRE_LABELS

PRESETS = ("tiny", "base")


def split_preset(preset: str, known=PRESETS) -> tuple[str, str]:
  """"tiny-<family>" -> ("tiny", family); "base" -> ("base", the default family); a UserError for anything else.

  The suffix is any registered family but the default one."""
  name, _, fam = (preset or known[0]).partition("-")
  suffixes = [f for f in registry.FAMILIES if f != registry.DEFAULT_FAMILY]
  if name not in known or (fam and fam not in suffixes):
    choices = [*known, *(f"{k}-{f}" for k in known for f in suffixes)]
    raise UserError(f"unknown preset {preset!r}; choose one of {tuple(choices)}")
  return name, fam or registry.DEFAULT_FAMILY


def preset_name(preset: str, family: str) -> str:
  """The preset name of `preset` for `family` (e.g. "tiny-<family>"; the default family has no suffix)."""
  return preset if family == registry.DEFAULT_FAMILY else f"{preset}-{family}"


def pretrain_preset(preset: str, *, forgetting: bool) -> ml_collections.ConfigDict:
  """The `:tiny` (CPU demo) and `:base` (paper recipe) presets, with or without forgetting."""
  preset, fam = split_preset(preset)
  c = pretrain_defaults()
  c.model = model_defaults(fam)  # the family's base shape (RoBERTa-base; Llama: ~160M, no dropout, untied)
  if preset == "tiny":
    c.total_steps = 1200
    c.forget_every = 200
    c.batch_size = 32
    c.log_every = 10
    c.eval_every = 90           # not a divisor of forget_every: no evaluation lands right after a reset
    c.checkpoint_every = 300
    c.model.update(registry.family(fam).tiny_shape)
    c.data.update(seq_len=64, vocab_size=2048, max_valid_sequences=256)
    c.optim.update(lr=2e-3, warmup_steps=100)
  if preset == "base":
    c.data.source = "prepared:data/cc100_en"  # python -m rewire.main --config=configs/prepare.py:cc100 ...
  if not forgetting:
    c.forget_every = 0
    c.optim.clip_norm = 0.0  # the reference clips only its forgetting runs
  return c


def tiny_source(family: str) -> str:
  """The workdir the `tiny` presets of later stages read: `runs/forget`, `runs/forget_<family>` for another
  family (where `configs/pretrain_forget.py:tiny[-<family>]` is run to in the README)."""
  return "runs/forget" if family == registry.DEFAULT_FAMILY else f"runs/forget_{family}"


def tiny_stage_config(stage: str, family: str = registry.DEFAULT_FAMILY) -> ml_collections.ConfigDict:
  """The `:tiny` presets of the later stages: CPU-sized, on the bundled data, reading `runs/forget`
  (`runs/forget_<family>` for another family), with the family's own default dropout."""
  source = tiny_source(family)
  dropout = registry.family(family).config_group().dropout
  if stage == "adapt_language":
    c = adapt_language_defaults()
    c.model = model_defaults(family)
    c.init_from = source
    c.model.update(dropout=dropout, attention_dropout=dropout)
    c.data.update(source="bundled:bible_es", seq_len=64, vocab_size=2048, max_valid_sequences=128)
    c.update(total_steps=300, batch_size=32, log_every=10, eval_every=100, checkpoint_every=150,
             token_budget=100_000)
    c.optim.update(lr=2e-3, warmup_steps=30)
    return c
  if stage in ("finetune_nli", "finetune_qa"):
    c = finetune_defaults()
    c.init_from = source
    c.update(epochs=3, batch_size=32, log_every=20, max_train_examples=3000, max_len=64)
    c.model.update(dropout=dropout, attention_dropout=dropout)
    c.optim.update(lr=5e-4, warmup_fraction=0.06)
    if stage == "finetune_nli":
      c.update(task="nli", train_source="bundled:verse_nli:train", dev_source="bundled:verse_nli:dev")
    else:
      c.update(task="qa", train_source="bundled:verse_qa:train", dev_source="bundled:verse_qa:dev",
               doc_stride=24, max_query_len=24)
    return c
  raise UserError(f"no tiny preset for stage {stage!r}")


def pipeline_preset(preset: str) -> ml_collections.ConfigDict:
  """`tiny`: the whole method on the bundled Bibles in minutes on a CPU; `base`: the paper's recipe."""
  preset, fam = split_preset(preset)
  c = pipeline_defaults()
  c.pretrain = pretrain_preset(preset_name(preset, fam), forgetting=True)
  c.forget_every = c.pretrain.forget_every
  if preset == "tiny":
    c.languages = ("es",)
    c.adapt_source = "bundled:bible_{lang}"
    c.adapt = tiny_stage_config("adapt_language", fam)
    span = "span" in registry.family(fam).task_heads
    if span:
      # Extractive QA: a 2-layer model learns it in minutes (its NLI head on <s> stays at chance this small).
      c.finetune = tiny_stage_config("finetune_qa", fam)
    else:  # a family without a span head (a decoder): its verse-genre classifier
      c.finetune = tiny_stage_config("finetune_nli", fam)
      c.finetune.update(task="classify", train_source="bundled:verse_genre:train",
                        dev_source="bundled:verse_genre:dev", label_names=GENRE_LABELS)
    c.finetune.update(max_train_examples=2000, epochs=2)
    c.finetune.optim.lr = 5e-4
    c.evaluate.test_source = "bundled:verse_qa:test" if span else "bundled:verse_genre:test"
  else:
    c.languages = ("ar", "de", "es", "hi", "ru", "th", "tr", "vi", "zh")
    c.adapt_source = "prepared:data/cc100_{lang}"  # configs/prepare.py:cc100.LANG for each language
    c.finetune.update(task="nli", train_source="hf:multi_nli:train", dev_source="hf:xnli:en:validation",
                      epochs=10, batch_size=32)
    c.evaluate.test_source = "hf:xnli:{lang}:test"
  c.adapt.init_from = ""
  c.finetune.init_from = ""
  return c
