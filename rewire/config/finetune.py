"""The schema of task adaptation (fine-tuning): every key, its default, and the check of its values.

Fine-tuning (`rewire.stages.finetune`) trains a pretrained body and a new task head on an English task,
with the token embeddings frozen, and keeps the epoch with the best dev score. Its model's shape comes
from the pretrained workdir, so its `model` group holds only what may change per run.
"""

from __future__ import annotations

import ml_collections

from rewire.config.groups import adamw_defaults, mesh_defaults, run_model_defaults
from rewire.errors import UserError
from rewire.tasks.names import NLI_LABELS


def finetune_defaults() -> ml_collections.ConfigDict:
  """Task adaptation (step 3): the body and a new task head train on an English task, embeddings frozen."""
  c = ml_collections.ConfigDict()
  c.stage = "finetune"
  c.task = "nli"                 # "nli" (3-way, from <s>), "classify" (one text) or "qa" (SQuAD-style extractive)
  c.seed = 0
  c.init_from = ""               # the pretrained workdir (required); its tokenizer is used
  c.init_step = 0
  c.train_source = "hf:multi_nli:train"         # see rewire/tasks/loading.py for the accepted forms
  c.dev_source = "hf:xnli:en:validation"        # model selection
  c.label_names = NLI_LABELS     # the class names in label-index order (classify: e.g. GENRE_LABELS)
  c.max_train_examples = 0       # >0: the first N training examples
  c.max_len = 128
  c.doc_stride = 128
  c.max_query_len = 64
  c.epochs = 10
  c.batch_size = 32
  c.eval_batch_size = 64
  c.log_every = 50
  c.model = run_model_defaults()
  c.optim = adamw_defaults(lr=1e-5, warmup_steps=0)
  c.optim.warmup_fraction = 0.0  # warm-up as a fraction of all updates, when warmup_steps is 0
  c.optim.clip_norm = 0.0
  # Token embeddings stay frozen (the LM head is not part of a task model); body and head train.
  c.optim.rules = (("input", "frozen"), (".*", "train"))
  c.mesh = mesh_defaults()
  return c


def check_finetune(config) -> None:
  if config.epochs <= 0:
    raise UserError(f"epochs must be positive, got {config.epochs}")
  if not config.optim.lr > 0:
    raise UserError(f"optim.lr must be positive, got {config.optim.lr}")
