"""The RoBERTa family (the encoder of Chen et al. 2023, rewire's default): everything it decides, in one class.

Its masked-LM objective and unigram baseline, its FLOPs per step, its parameter paths (a tied decoder: the
token embeddings are also the output projection; a vocabulary-sized LM bias), and its Hugging Face mapping
(`RobertaConfig` both ways; XLM-R and Flax/TF architecture names import as the same network; the torch
decoder copy of the tied embeddings is checked and dropped).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from rewire.errors import UserError
from rewire.models import flops
from rewire.models.family import Family
from rewire.models.mlm import MaskedLM, MaskingSpec, unigram_loss
from rewire.models.roberta import RobertaConfig
from rewire.models.roberta_heads import (RobertaForMaskedLM, RobertaForQuestionAnswering,
                                         RobertaForSequenceClassification)

_HF_PREFIXES = ("Flax", "TF")
_HF_NAMES = ("Roberta", "XLMRoberta")
# Weights an HF checkpoint may hold that rewire's models do not: the pooler (no task here uses it), the
# position/token-type id buffers of old torch checkpoints, and the decoder copy tied to the embeddings.
_IGNORED_PT = re.compile(r"^(roberta\.)?pooler\.|^roberta\.embeddings\.(position_ids|token_type_ids)$|"
                         r"^lm_head\.decoder\.(weight|bias)$")
_IGNORED_FLAX = re.compile(r"^roberta/pooler/")


class Roberta(Family):
  name = "roberta"
  config_cls = RobertaConfig
  architectures = {"RobertaForMaskedLM": RobertaForMaskedLM,
                   "RobertaForSequenceClassification": RobertaForSequenceClassification,
                   "RobertaForQuestionAnswering": RobertaForQuestionAnswering}
  lm = "RobertaForMaskedLM"
  task_heads = {"classification": "RobertaForSequenceClassification", "span": "RobertaForQuestionAnswering"}
  word_embedding = "roberta/embeddings/word_embeddings/embedding"
  vocab_bias = "lm_head/bias"
  body = "roberta/"
  position_offset = 2   # positions are offset past the padding index
  shape_keys = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings",
                "type_vocab_size", "layer_norm_eps")
  tiny_shape = dict(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512)
  loss_name = "MLM"
  hf_model_types = ("roberta", "xlm-roberta")

  def describe(self, config_group) -> str:
    return "RoBERTa"

  def init_args(self, architecture: str, seq_len: int):
    ids, mask = super().init_args(architecture, seq_len)
    return (ids, mask, jnp.zeros((1, 1), jnp.int32)) if architecture == self.lm else (ids, mask)

  def objective(self, model, specials, *, mask_prob: float, max_predictions: int) -> MaskedLM:
    return MaskedLM(model, MaskingSpec(mask_id=specials.mask, pad_id=specials.pad, vocab_size=specials.vocab_size,
                                       mask_prob=mask_prob, max_predictions=max_predictions))

  def baseline_loss(self, counts, valid, specials) -> float:
    return unigram_loss(counts, valid, specials.mask)

  def step_flops(self, config, *, batch: int, seq_len: int, predictions: int) -> float:
    return flops.mlm_step_flops(hidden=config.hidden_size, layers=config.num_layers,
                                intermediate=config.intermediate_size, vocab=config.vocab_size, batch=batch,
                                seq_len=seq_len, predictions=predictions)

  # -- Hugging Face -------------------------------------------------------------------------------------
  def hf_config(self, architecture: str, config, *, bos_id: int, eos_id: int):
    from transformers import RobertaConfig as HFRobertaConfig
    return HFRobertaConfig(**config.to_hf_dict(), bos_token_id=bos_id, eos_token_id=eos_id,
                           architectures=[architecture], torch_dtype="float32")

  def info_from_hf(self, d: Mapping[str, Any], what: str):
    from transformers import RobertaConfig as HFRobertaConfig
    model_type = d.get("model_type")
    archs = d.get("architectures") or [f"{'XLM' if model_type == 'xlm-roberta' else ''}RobertaForMaskedLM"]
    arch = archs[0]
    for prefix in _HF_PREFIXES:
      arch = arch[len(prefix):] if arch.startswith(prefix) else arch
    task = next((arch[len(f):] for f in _HF_NAMES if arch.startswith(f)), None)
    arch = f"Roberta{task}"
    if arch not in self.architectures:
      raise UserError(f"{what}: architecture {archs[0]!r} is not supported; rewire imports "
                      f"{', '.join(self.architectures)} (and their XLMRoberta/Flax forms)")
    c = HFRobertaConfig.from_dict({k: v for k, v in d.items() if k != "model_type"})
    unsupported = [f"{k}={getattr(c, k, None)!r}" for k, ok in (
        ("hidden_act", c.hidden_act == "gelu"),
        ("position_embedding_type", getattr(c, "position_embedding_type", "absolute") == "absolute"),
        ("is_decoder", not c.is_decoder), ("tie_word_embeddings", c.tie_word_embeddings)) if not ok]
    if unsupported:
      raise UserError(f"{what}: unsupported option(s) {', '.join(unsupported)}")
    config = RobertaConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_layers=c.num_hidden_layers,
        num_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
        max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
        layer_norm_eps=float(c.layer_norm_eps), dropout=float(c.hidden_dropout_prob),
        attention_dropout=float(c.attention_probs_dropout_prob), init_std=float(c.initializer_range),
        pad_token_id=int(c.pad_token_id if c.pad_token_id is not None else 1))
    if arch == self.task_heads["classification"]:
      return arch, config, c.num_labels, tuple(str(c.id2label[i]) for i in range(c.num_labels))
    return arch, config, None, None

  def hf_state_in(self, state: dict, config, what: str, *, flax_names: bool) -> dict:
    if flax_names:
      return {k: v for k, v in state.items() if not _IGNORED_FLAX.search(k)}
    return {k: v for k, v in state.items() if not _IGNORED_PT.search(k)} | _untied_bias(state, what)


def _untied_bias(state: dict, what: str) -> dict:
  """Checks that a torch decoder copy is tied; returns `lm_head.bias` if only the decoder has it (old files)."""
  emb, dec = state.get("roberta.embeddings.word_embeddings.weight"), state.get("lm_head.decoder.weight")
  if emb is not None and dec is not None and (dec.shape != emb.shape or not np.array_equal(dec, emb)):
    raise UserError(f"{what}: lm_head.decoder.weight differs from roberta.embeddings.word_embeddings.weight; "
                    "rewire's decoder is tied to the embeddings")
  bias, dec_bias = state.get("lm_head.bias"), state.get("lm_head.decoder.bias")
  if dec_bias is None:
    return {}
  if bias is None:
    return {"lm_head.bias": dec_bias}
  if dec_bias.shape != bias.shape or not np.array_equal(dec_bias, bias):
    raise UserError(f"{what}: lm_head.decoder.bias differs from lm_head.bias")
  return {}
