"""The schema of the plasticity study (`rewire.study.graph`): pretraining variants, seeds, probe, zero-shot.

The study's groups are the stages' own schemas (`pretrain`, `probe`, `finetune`); its own keys say which
variants, seeds, languages and budgets to run, how the forgetting and weight-decay variants differ, and where its steps run (`rewire.config.engine`).
"""

from __future__ import annotations

import ml_collections

from rewire.config.engine import add_engine_keys, check_engine
from rewire.config.finetune import finetune_defaults
from rewire.config.pretrain import pretrain_defaults
from rewire.config.probe import parse_pairs, probe_defaults
from rewire.config.variants import DEFAULT_VARIANTS, WEIGHT_DECAY, check_variants
from rewire.errors import UserError


def study_defaults() -> ml_collections.ConfigDict:
  """The plasticity study (`rewire.study.graph`): standard against forgetting (and, in `variants`, a larger
  weight decay), several seeds, probed and zero-shot."""
  c = ml_collections.ConfigDict()
  c.stage = "study"
  c.seeds = (0, 1, 2)
  # the pretraining variants, each compared with standard: forget, weight_decay (rewire.config.variants)
  c.variants = DEFAULT_VARIANTS
  c.forget_every = 100
  c.forget_clip_norm = 0.5
  c.forget_until = 0             # > 0: no resets after this update (the last episode runs to the end)
  c.weight_decay = WEIGHT_DECAY  # the weight_decay variant's AdamW weight decay (the others: pretrain.optim's)
  c.relearn = ""                 # probe-only languages, NAME=SOURCE,... (no zero-shot test)
  c.languages = "es=bundled:bible_es,ja=bundled:bible_ja,uk=bundled:bible_uk"  # zero-shot languages
  # Controlled languages (zero-shot, adapted at every budget): NAME=SOURCE,... where {pretrain} is the
  # pretraining text; tested on the English test items, enciphered alike for a cipher:SEED: source.
  c.controlled = "relearned={pretrain},cipher=cipher:1:{pretrain}"
  c.pretrain = pretrain_defaults()
  c.probe = probe_defaults()
  c.finetune = finetune_defaults()
  c.evaluate = ml_collections.ConfigDict(dict(test_source="bundled:verse_genre:test", eval_batch_size=64,
                                              max_examples=0))
  c.adapt_steps = 600            # updates of the language adaptation whose embeddings go to the zero-shot test
                                 # (0: none; the probe's own tables go to the zero-shot test)
  c.ablation_languages = "es"    # zero-shot languages adapted at every probe budget (the others: the largest)
  c.bootstrap = 10_000           # seed-bootstrap resamples of the relative gain
  c.report_dir = ""              # also copy study.md, study.json and the figures here (e.g. results/study_cpu)
  return add_engine_keys(c)


def check_study(config) -> None:
  check_engine(config)
  check_variants(config.variants)
  if len(set(config.seeds)) != len(config.seeds) or not config.seeds:
    raise UserError(f"study seeds must be distinct and non-empty, got {tuple(config.seeds)}")
  names = [*parse_pairs(config.relearn, "relearn"), *parse_pairs(config.languages, "languages"),
           *parse_pairs(config.controlled, "controlled")]
  if len(set(names)) != len(names):
    raise UserError(f"study language names must be unique across relearn, languages and controlled: {names}")
