"""The schemas of assembly and zero-shot evaluation (Chen et al. 2023, step 4).

Assembly (`rewire.stages.assemble`) puts a language-adapted model's token embeddings and tokenizer into a
fine-tuned task model; evaluation (`rewire.stages.evaluate`) scores such models on each language's test
split.
"""

from __future__ import annotations

import ml_collections

from rewire.config.groups import mesh_defaults


def evaluate_defaults() -> ml_collections.ConfigDict:
  """Zero-shot evaluation (step 4) of assembled task models, one per language."""
  c = ml_collections.ConfigDict()
  c.stage = "evaluate"
  # "name=workdir pattern" pairs, comma-separated; {lang} in a pattern becomes each language, e.g.
  # "standard=runs/standard_nli_{lang},forget=runs/forget_nli_{lang}".
  c.models = ""
  c.languages = ("es",)
  c.test_source = "hf:xnli:{lang}:test"     # {lang} is replaced by each language
  c.eval_batch_size = 64
  c.max_examples = 0                        # >0: the first N test examples per language
  c.mesh = mesh_defaults()
  return c


def assemble_defaults() -> ml_collections.ConfigDict:
  """Assembly (step 4): a task model with the token embeddings and tokenizer of a language-adapted model."""
  c = ml_collections.ConfigDict()
  c.stage = "assemble"
  c.task_from = ""               # a fine-tuned workdir (configs/finetune_*.py)
  c.embeddings_from = ""         # a language-adapted workdir (configs/adapt_language.py)
  return c
