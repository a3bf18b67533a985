"""The Llama family (a causal decoder, registered beside RoBERTa): everything it decides, in one class.

Its next-token objective and baseline, its FLOPs per step, its parameter paths (an untied `lm_head` unless
`tie_word_embeddings`; no zeroed padding row, as in HF Llama), and its Hugging Face mapping: import reads
Llama- and Mistral-architecture `config.json` files (the same network when Mistral's sliding window is
off). A field that changes the network in a way rewire does not implement is refused with one line naming
it rather than imported into a model that would silently compute something else: a sliding window, any
RoPE scaling, attention or MLP biases, an activation other than SiLU. Export writes a
`transformers.LlamaConfig` that both `LlamaForCausalLM` (PyTorch) and `FlaxLlamaForCausalLM` load.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from rewire.errors import UserError
from rewire.models import flops
from rewire.models.causal_lm import CausalLM, causal_unigram_loss
from rewire.models.family import Family
from rewire.models.llama import LlamaConfig
from rewire.models.llama_heads import LlamaForCausalLM, LlamaForSequenceClassification

# PyTorch buffers of older checkpoints that are not weights.
_IGNORED_PT = re.compile(r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$")


class Llama(Family):
  name = "llama"
  config_cls = LlamaConfig
  architectures = {"LlamaForCausalLM": LlamaForCausalLM,
                   "LlamaForSequenceClassification": LlamaForSequenceClassification}
  lm = "LlamaForCausalLM"
  task_heads = {"classification": "LlamaForSequenceClassification"}
  word_embedding = "model/embed_tokens/embedding"
  output_head = "lm_head/kernel"
  body = "model/"
  zero_pad_row = False
  shape_keys = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
                "max_position_embeddings", "rms_norm_eps", "rope_theta", "tie_word_embeddings")
  # 2 layers, hidden 128, 4 query and 2 key/value heads, SwiGLU 352, untied
  tiny_shape = dict(hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=352)
  loss_name = "next-token"
  generates = True
  hf_model_types = ("llama", "mistral")

  def describe(self, config_group) -> str:
    kv = config_group.num_kv_heads or config_group.num_heads
    tied = "tied" if config_group.tie_word_embeddings else "untied"
    return f"Llama decoder ({config_group.num_heads} query / {kv} key-value heads, SwiGLU, {tied} head)"

  def objective(self, model, specials, *, mask_prob: float, max_predictions: int) -> CausalLM:
    return CausalLM(model, specials.pad)

  def baseline_loss(self, counts, valid, specials) -> float:
    return causal_unigram_loss(counts, valid, pad_id=specials.pad, bos_id=specials.bos)

  def step_flops(self, config, *, batch: int, seq_len: int, predictions: int) -> float:
    return flops.decoder_step_flops(hidden=config.hidden_size, layers=config.num_layers,
                                    intermediate=config.intermediate_size, vocab=config.vocab_size, batch=batch,
                                    seq_len=seq_len, kv_fraction=config.kv_heads / config.num_heads)

  # -- Hugging Face -------------------------------------------------------------------------------------
  def hf_config(self, architecture: str, config, *, bos_id: int, eos_id: int):
    from transformers import LlamaConfig as HFLlamaConfig
    return HFLlamaConfig(**hf_config_dict(config, architecture, bos_id=bos_id, eos_id=eos_id))

  def info_from_hf(self, d: Mapping[str, Any], what: str):
    arch = (d.get("architectures") or ["LlamaForCausalLM"])[0]
    arch = arch[len("Flax"):] if arch.startswith("Flax") else arch
    task = arch.replace("Mistral", "Llama", 1)
    if task not in self.architectures:
      raise UserError(f"{what}: architecture {arch!r} is not supported; rewire imports "
                      f"{', '.join(self.architectures)} (and their Mistral/Flax forms)")
    config = config_from_hf(d, what)
    if task == self.task_heads["classification"]:
      id2label = d.get("id2label") or {}
      n = int(d.get("num_labels") or len(id2label) or 2)
      return task, config, n, tuple(str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n))
    return task, config, None, None

  def hf_state_in(self, state: dict, config, what: str, *, flax_names: bool) -> dict:
    emb_key, head_key = (("model/embed_tokens/embedding", "lm_head/kernel") if flax_names
                         else ("model.embed_tokens.weight", "lm_head.weight"))
    if config.tie_word_embeddings and head_key in state:  # HF Flax Llama always stores a copy of a tied head
      emb, head = state.get(emb_key), state[head_key]
      if emb is not None and not np.array_equal(head.T if flax_names else head, emb):
        raise UserError(f"{what}: tie_word_embeddings is set but {head_key} differs from {emb_key}")
      state = {k: v for k, v in state.items() if k != head_key}
    return state if flax_names else {k: v for k, v in state.items() if not _IGNORED_PT.search(k)}

  def hf_flax_params(self, architecture: str, config, params):
    if architecture == self.lm and config.tie_word_embeddings:  # the lm_head copy FlaxLlamaForCausalLM reads
      return {**params, "lm_head": {"kernel": np.asarray(params["model"]["embed_tokens"]["embedding"]).T.copy()}}
    return params

  def hf_notes(self, config) -> list[str]:
    out = []
    if config.rope_theta != 10000.0:
      out.append(f"rope_theta={config.rope_theta} (FlaxLlama uses 10000)")
    if config.head_size != config.hidden_size // config.num_heads:
      out.append(f"head_dim={config.head_size} (FlaxLlama uses hidden_size // num_heads)")
    return out


def unsupported_fields(d: Mapping[str, Any]) -> list[str]:
  """`name=value` for every field of an HF Llama/Mistral config dict that rewire does not implement."""
  bad = []
  if d.get("sliding_window") is not None and d.get("use_sliding_window", True):
    bad.append(f"sliding_window={d['sliding_window']!r}")
  if d.get("rope_scaling") is not None:
    bad.append(f"rope_scaling={d['rope_scaling']!r}")
  for key in ("attention_bias", "mlp_bias"):
    if d.get(key):
      bad.append(f"{key}=True")
  if d.get("hidden_act", "silu") != "silu":
    bad.append(f"hidden_act={d['hidden_act']!r}")
  return bad


def config_from_hf(d: Mapping[str, Any], what: str) -> LlamaConfig:
  """rewire's `LlamaConfig` of an HF Llama/Mistral config dict; one-line UserError for unsupported fields."""
  bad = unsupported_fields(d)
  if bad:
    raise UserError(f"{what}: unsupported {d.get('model_type')} option(s) {', '.join(bad)} (rewire implements "
                    f"full causal attention, plain RoPE, no biases, SiLU)")
  heads = int(d["num_attention_heads"])
  hidden = int(d["hidden_size"])
  head_dim = int(d.get("head_dim") or hidden // heads)
  kv = int(d.get("num_key_value_heads") or heads)
  pad = d.get("pad_token_id")
  return LlamaConfig(
      vocab_size=int(d["vocab_size"]), hidden_size=hidden, num_layers=int(d["num_hidden_layers"]),
      num_heads=heads, num_kv_heads=0 if kv == heads else kv, head_dim=0 if head_dim == hidden // heads else head_dim,
      intermediate_size=int(d["intermediate_size"]),
      max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
      rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)), rope_theta=float(d.get("rope_theta", 10000.0)),
      tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
      attention_dropout=float(d.get("attention_dropout", 0.0) or 0.0),
      init_std=float(d.get("initializer_range", 0.02)),
      pad_token_id=int(pad if isinstance(pad, int) else 0))


def hf_config_dict(config: LlamaConfig, architecture: str, *, bos_id: int, eos_id: int) -> dict[str, Any]:
  """The keyword arguments of `transformers.LlamaConfig` for a rewire Llama."""
  return dict(
      vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
      num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
      num_key_value_heads=config.kv_heads, head_dim=config.head_size,
      max_position_embeddings=config.max_position_embeddings, rms_norm_eps=config.rms_norm_eps,
      rope_theta=config.rope_theta, tie_word_embeddings=config.tie_word_embeddings, hidden_act="silu",
      attention_bias=False, mlp_bias=False, attention_dropout=config.attention_dropout,
      initializer_range=config.init_std, pad_token_id=config.pad_token_id, bos_token_id=bos_id,
      eos_token_id=eos_id, architectures=[architecture], torch_dtype="float32")
