"""An adaptation's new vocabulary: its tokenizer (replaced or extended), how its rows start, which rows train.

Language adaptation gives the body a new vocabulary. By default the new language's own tokenizer replaces
the source's; with `extend` the source's tokenizer is kept and the new language's pieces that it cannot
spell are appended (`rewire.vocab.extend`), so old text keeps its ids. The rows then start as
`reinit.method` says (`rewire.vocab`; an extension copies every old row, so `random` means: the old rows
copied, the added ones drawn), and `reinit.train_rows=new` keeps the copied rows exactly as the source
had them while the others train.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Callable

import numpy as np

from rewire import workdir
from rewire.data.run_data import open_corpus, sync_processes
from rewire.data.tokenizer import load_tokenizer, save_tokenizer
from rewire.errors import UserError
from rewire.vocab.extend import Extension, extend_tokenizer
from rewire.vocab.recipe import Recipe, copied_rows
from rewire.vocab.start import recipe_between, vocabularies

EXTENDED_TOKENIZER = "extended_tokenizer.json"  # in the workdir: the tokenizer an extension encodes its data with
LANGUAGE_DIR = "language"  # in the workdir: the new language's own corpus and tokenizer, which an extension reads


def start_method(config) -> str:
  """How the new rows start: `reinit.method`, except that an extension keeps the old rows (its `random`
  copies them, as `overlap` does, and draws the added rows)."""
  method = config.reinit.method
  return "overlap" if config.extend and method == "random" else method


def source_tokenizer(config):
  """The tokenizer of `init_from`, which every start but `random` and an extension read."""
  path = os.path.join(config.init_from, workdir.TOKENIZER)
  if not os.path.isfile(path):
    raise UserError(f"reinit.method={config.reinit.method}{' with extend' if config.extend else ''} reads the "
                    f"source's tokenizer, but {config.init_from} has no {workdir.TOKENIZER} (use "
                    f"reinit.method=random without extend)")
  return load_tokenizer(path)


def vocabulary_recipe(config, tokenizer, text: Callable[[], np.ndarray]) -> Recipe | None:
  """The recipe of the run's start method from the source's tokenizer to `tokenizer` (None for `random`,
  the paper's draw). `text` gives the run's text as token ids [N, L], read only when `focus` or `omp`
  trains its auxiliary vectors on it."""
  method = start_method(config)
  if method == "random":
    return None
  return recipe_between(method, config.reinit, source_tokenizer(config), tokenizer, text, seed=config.seed)


def kept_rows(config, family, tokenizer) -> dict[str, tuple[np.ndarray, int]] | None:
  """The rows that keep the source's values (`reinit.train_rows`): {vocabulary leaf: (row mask, axis)}, or
  None when every row trains."""
  train_rows = config.reinit.train_rows or ("new" if config.extend else "all")
  method = start_method(config)
  if train_rows == "all" or not config.init_from or method == "random":
    return None
  mask = copied_rows(method, vocabularies(source_tokenizer(config), tokenizer))
  return {path: (mask, family.vocab_axis(path)) for path in family.vocab_leaves()} if mask.any() else None


def extended_data(config, run_dir: str, *, is_main: bool, log_stream=None) -> tuple[Any, Extension]:
  """The run's `data` group with the extended tokenizer, and the extension. The new language's own tokenizer
  is `data.tokenizer`, or one trained on `data.source` (prepared under `<run_dir>/language`); the extended
  tokenizer is written to `<run_dir>/extended_tokenizer.json`, which the returned group names."""
  language = open_corpus(config.data, os.path.join(run_dir, LANGUAGE_DIR), is_main=is_main, log_stream=log_stream)
  extension = extend_tokenizer(source_tokenizer(config), load_tokenizer(language.tokenizer_path))
  path = os.path.join(run_dir, EXTENDED_TOKENIZER)
  if is_main:
    save_tokenizer(extension.tokenizer, path)
  sync_processes("rewire-extended-tokenizer")
  data = copy.deepcopy(config.data)
  data.tokenizer = path
  return data, extension
