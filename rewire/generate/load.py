"""A decoder workdir as something to sample from: the causal LM, its params and its tokenizer.

Whatever stage wrote the workdir: a pretrained, language-adapted or imported `LlamaForCausalLM` is used as
it is. A task model (`LlamaForSequenceClassification`, fine-tuned or assembled) has no LM head of its own,
so its body is put under the causal LM: with tied embeddings the head is its embedding matrix; untied,
the head comes from the language model its embeddings came from (`assembled_from.embeddings` of an
assembly, else the fine-tuning run's `init_from`), which must have the same vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np
import tokenizers

from rewire import workdir as rworkdir
from rewire.workdir import load_params
from rewire.data.tokenizer import load_tokenizer
from rewire.errors import UserError
from rewire.models import registry
from rewire.optim import get_path, with_path


@dataclasses.dataclass
class Decoder:
  model: Any                      # LlamaForCausalLM
  params: Any
  tokenizer: tokenizers.Tokenizer
  step: int
  head_from: str | None = None    # the workdir the output head was taken from (task models only)

  def special(self, token: str) -> int | None:
    return self.tokenizer.token_to_id(token)

  def encode(self, text: str) -> list[int]:
    """The prompt's ids: `<s>` (when the tokenizer has it) and the text, without a closing `</s>`."""
    bos = self.special("<s>")
    ids = self.tokenizer.encode(text, add_special_tokens=False).ids
    return ([bos] if bos is not None else []) + ids

  def decode(self, ids: list[int]) -> str:
    return self.tokenizer.decode(ids, skip_special_tokens=True)


def _head_source(workdir: str, info: dict) -> str:
  source = (info.get("assembled_from") or {}).get("embeddings")
  if not source:
    path = os.path.join(workdir, "config.json")
    if os.path.isfile(path):
      with open(path) as f:
        source = json.load(f).get("init_from")
  if not source:
    raise UserError(f"{workdir} is a task model with an untied output head that it does not hold, and "
                    f"neither assembled_from nor init_from says where its language model is")
  return source


def load_decoder(workdir: str, step: int | None = None) -> Decoder:
  """The causal LM of any Llama-family workdir (UserError for encoder workdirs)."""
  info = rworkdir.read_model_info(workdir)
  arch = registry.info_architecture(info)
  fam = registry.family_of(arch)
  if not fam.generates:
    raise UserError(f"{workdir} holds a {arch}; rewire.generate samples from decoder workdirs "
                    f"({', '.join(f.lm for f in registry.FAMILIES.values() if f.generates)})")
  _, config = registry.config_from_info(info)
  params, step = load_params(workdir, step)
  params = jax.device_get(params)
  head_from = None
  model = registry.make_model(fam.lm, config)
  if arch != fam.lm:
    body = fam.body.rstrip("/")
    params = {body: params[body]}
    abstract = registry.abstract_params(model)
    lm_leaves = fam.lm_matrices(abstract)
    if "output" in lm_leaves:  # an untied head: the language model the embeddings came from holds it
      head_from = _head_source(workdir, info)
      lm, _ = load_params(head_from)
      path = tuple(lm_leaves["output"].split("/"))
      head = np.asarray(jax.device_get(get_path(lm, path)))
      want = get_path(abstract, path).shape
      if head.shape != want:
        raise UserError(f"the output head of {head_from} is {head.shape}, but {workdir} needs {want}")
      params = with_path(params, path, head)
  tok_path = rworkdir.tokenizer_path(workdir)
  if not os.path.isfile(tok_path):
    raise UserError(f"{workdir} has no tokenizer.json to encode prompts with")
  return Decoder(model, params, load_tokenizer(tok_path), step, head_from)
