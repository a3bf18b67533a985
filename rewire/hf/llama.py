"""Hugging Face configs of the Llama family: `LlamaConfig` <-> rewire's `LlamaConfig`, and what is refused.

Import reads Llama- and Mistral-architecture `config.json` files (`model_type` "llama" or "mistral"; both
are the same network when Mistral's sliding window is off). A configuration field that changes the network
in a way rewire does not implement is refused with one line naming it, rather than imported into a model
that would silently compute something else: a sliding window, any RoPE scaling, attention or MLP biases,
an activation other than SiLU. Export writes a `transformers.LlamaConfig` that both `LlamaForCausalLM`
(PyTorch) and `FlaxLlamaForCausalLM` load.
"""

from __future__ import annotations

from typing import Any

from rewire.errors import UserError
from rewire.models.llama import LlamaConfig

MODEL_TYPES = ("llama", "mistral")
# PyTorch buffers of older checkpoints that are not weights.
IGNORED_PT = r"^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$"


def unsupported_fields(d: dict[str, Any]) -> list[str]:
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


def config_from_hf(d: dict[str, Any], what: str) -> LlamaConfig:
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


def flax_limitations(config: LlamaConfig) -> list[str]:
  """What HF's `FlaxLlamaForCausalLM` (transformers 4.57) cannot reproduce of this config (PyTorch can)."""
  out = []
  if config.rope_theta != 10000.0:
    out.append(f"rope_theta={config.rope_theta} (FlaxLlama uses 10000)")
  if config.head_size != config.hidden_size // config.num_heads:
    out.append(f"head_dim={config.head_size} (FlaxLlama uses hidden_size // num_heads)")
  return out
