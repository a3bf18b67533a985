"""Assembly (Chen et al. 2023, step 4): a task model whose token embeddings come from another language.

The task workdir (fine-tuned in English, embeddings frozen) supplies the body and the task head; the
language-adapted workdir supplies the token embeddings and the tokenizer. The result is a workdir of
its own -- `model.json`, `tokenizer.json`, `checkpoints/0` -- that evaluation, export and any stage can use.
"""

from __future__ import annotations

import os
import shutil

import jax
import numpy as np

from rewire import workdir
from rewire.workdir import has_checkpoint, load_params
from rewire.data.tokenizer import load_tokenizer
from rewire.errors import UserError
from rewire.models import registry
from rewire.optim import get_path, with_path


def run(config, workdir_: str) -> dict:
  """The `assemble` stage (`configs/assemble.py`)."""
  return assemble(config.task_from, config.embeddings_from, workdir_)


def assemble(task_workdir: str, embeddings_workdir: str, out_workdir: str) -> dict:
  """Writes the assembled model to `out_workdir`; returns its `model.json` contents."""
  for key, value in (("task_from", task_workdir), ("embeddings_from", embeddings_workdir)):
    if not value:
      raise UserError(f"assemble needs config.{key}: the workdir of a "
                      f"{'fine-tuned task model' if key == 'task_from' else 'language-adapted model'}")
  task_info = workdir.read_model_info(task_workdir)
  emb_info = workdir.read_model_info(embeddings_workdir)
  family = registry.family_of(task_info.get("architecture", ""))
  if task_info.get("architecture") not in family.task_heads.values():
    raise UserError(f"{task_workdir} is a {task_info.get('architecture')}, not a task model")
  if emb_info.get("architecture") != family.lm:
    raise UserError(f"{embeddings_workdir} is a {emb_info.get('architecture')}, not a language-adapted "
                    f"{family.lm}")
  if task_info["hidden_size"] != emb_info["hidden_size"]:
    raise UserError(f"hidden size mismatch: task model {task_workdir} has {task_info['hidden_size']}, "
                    f"embeddings from {embeddings_workdir} have {emb_info['hidden_size']}")
  tok_path = workdir.tokenizer_path(embeddings_workdir)
  vocab = load_tokenizer(tok_path).get_vocab_size()
  task_params, _ = load_params(task_workdir)
  emb_params, _ = load_params(embeddings_workdir)
  path = family.word_embedding_path()
  embedding = np.asarray(get_path(emb_params, path))
  if embedding.shape[0] != vocab:
    raise UserError(f"vocabulary mismatch: {tok_path} has {vocab} entries but the embedding in "
                    f"{embeddings_workdir} has {embedding.shape[0]} rows")
  width = np.asarray(get_path(task_params, path)).shape[1]
  if embedding.shape[1] != width:
    raise UserError(f"hidden size mismatch: embedding width {embedding.shape[1]} vs the task model's {width}")
  if has_checkpoint(workdir.checkpoint_dir(out_workdir)):
    raise UserError(f"{out_workdir} already holds a model; choose a new workdir")

  params = with_path(jax.tree.map(np.asarray, task_params), path, embedding)
  task_info = {k: v for k, v in task_info.items() if k != workdir.HF_SPECIAL_IDS}  # another tokenizer's ids
  info = dict(task_info, vocab_size=vocab, assembled_from={"task": os.path.abspath(task_workdir),
                                                           "embeddings": os.path.abspath(embeddings_workdir)})
  workdir.write_params(out_workdir, params, {"assembled": True})
  workdir.copy_tokenizer(tok_path, out_workdir)
  workdir.write_model_info(out_workdir, info)
  workdir.write_summary(out_workdir, {"finished": True, **info["assembled_from"]})
  return info


def assemble_once(task_workdir: str, embeddings_workdir: str, out_workdir: str) -> str:
  """`assemble` unless `out_workdir` already holds a complete assembly; a partial one is replaced."""
  if not workdir.is_complete(out_workdir):
    if os.path.isdir(out_workdir):
      shutil.rmtree(out_workdir)  # an interrupted assembly (it has no summary.json)
    assemble(task_workdir, embeddings_workdir, out_workdir)
  return out_workdir
