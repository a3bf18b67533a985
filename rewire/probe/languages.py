"""Probe languages: each a corpus with its own tokenizer, read at every token budget the probe trains on.

A probe language is any text source (or a `prepared:DIR`) given as `NAME=SOURCE`; it is prepared once
into the probe's workdir, and every token budget takes the budget's exact prefix of its training
sequences. Its unigram baseline (from all its training text, so it does not depend on the budgets
probed) sets the default target loss.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any

from rewire.config.probe import parse_pairs
from rewire.data.batches import budget_prefix
from rewire.data.run_data import open_corpus
from rewire.data.tokenizer import load_tokenizer, special_ids
from rewire.errors import UserError
from rewire.models import registry
from rewire.probe.stacked import TableData


@dataclasses.dataclass
class Language:
  name: str
  tokenizer_path: str
  specials: Any
  counts: Any                      # the training text's token counts (the unigram baseline's distribution)
  valid: Any                       # [Nv, L] the fixed validation sequences
  budgets: dict[int, TableData]    # token budget -> the data of its tables

  def unigram(self, family: registry.Family) -> float:
    """The language's unigram baseline for the family's objective, on its validation sequences."""
    return family.baseline_loss(self.counts, self.valid, self.specials)


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
    for budget in sorted(int(b) for b in cfg.token_budgets):
      try:
        n, _ = budget_prefix(corpus, budget, cfg.batch_size)
      except UserError as e:
        raise UserError(f"probe language {name} ({source}): {e}; lower token_budgets or give it more "
                        "text") from None
      budgets[budget] = TableData(train=corpus.read("train", 0, n), valid=valid)
    # The baseline's counts are all its training text's, so it does not depend on the budgets probed.
    out.append(Language(name, corpus.tokenizer_path, specials, corpus.unigram_counts(), valid, budgets))
  return out
