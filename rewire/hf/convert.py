"""Conversion between rewire's param trees and Hugging Face checkpoints: names, shapes, `model.json`.

rewire's trees use HF's Flax names already (RoBERTa's and Llama's), so the Flax side is a
flatten/unflatten; PyTorch needs one explicit, reversible name/transpose map (`pytorch_name`, the same for
both families), written out here rather than through transformers' torch-dependent converters. The
Llama family's configs live in `rewire.hf.llama`. `ModelInfo` is what a workdir's `model.json` says;
`model_info_from_hf` reads an HF `config.json` into one. `rewire.hf.export` and `rewire.hf.importer` build on these.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from typing import Any, Sequence

import flax.serialization
import jax
import numpy as np
from flax import traverse_util

from rewire.models import registry
from rewire import workdir as rworkdir
from rewire.errors import UserError
from rewire.hf import llama as hf_llama
from rewire.models.roberta import ModelConfig

_HF_PREFIXES = ("Flax", "TF")
_HF_FAMILIES = ("Roberta", "XLMRoberta")
# Weights an HF checkpoint may hold that rewire's models do not: the pooler (no task here uses it), the
# position/token-type id buffers of old torch checkpoints, and the decoder copy tied to the embeddings.
_IGNORED_PT = re.compile(r"^(roberta\.)?pooler\.|^roberta\.embeddings\.(position_ids|token_type_ids)$|"
                         r"^lm_head\.decoder\.(weight|bias)$")
_IGNORED_FLAX = re.compile(r"^roberta/pooler/")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What `model.json` says: the architecture, the network's shape, and the task's labels."""
  architecture: str
  config: Any                     # the family's config (ModelConfig, LlamaConfig)
  num_labels: int | None = None
  labels: tuple[str, ...] | None = None

  def make(self):
    return registry.make_model(self.architecture, self.config, self.num_labels)

  @classmethod
  def read(cls, workdir: str) -> "ModelInfo":
    """The `model.json` of `workdir`; keys other than the architecture, config fields and labels are metadata."""
    d = rworkdir.read_model_info(workdir)
    num_labels = d.get("num_labels")
    labels = d.get("label_names", d.get("labels"))
    if labels is not None:
      labels = tuple(str(x) for x in labels)
      num_labels = len(labels) if num_labels is None else num_labels
    _, config = registry.config_from_info(d)
    info = cls(d.get("architecture", registry.MLM), config, num_labels, labels)
    info.make()  # validates the architecture and num_labels
    return info

  @property
  def family(self) -> registry.Family:
    return registry.family_of(self.architecture)

  def to_json(self) -> dict[str, Any]:
    out: dict[str, Any] = {"architecture": self.architecture, **dataclasses.asdict(self.config)}
    if self.num_labels is not None:
      out["num_labels"] = self.num_labels
    if self.labels is not None:
      out["label_names"] = list(self.labels)
    return out


# ----------------------------------------------------------------------------------------------------------
# Names: rewire/HF-Flax paths ("roberta/encoder/layer/0/attention/self/query/kernel") <-> PyTorch names.


def pytorch_name(path: str) -> tuple[str, bool]:
  """The PyTorch state-dict name of a Flax param path, and whether the array is transposed there."""
  *head, last = path.split("/")
  if last == "kernel":
    return ".".join(head + ["weight"]), True
  if last in ("scale", "embedding"):
    return ".".join(head + ["weight"]), False
  return ".".join(head + [last]), False


def flatten(params: Any) -> dict[str, Any]:
  return {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
  return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def to_pytorch(params: Any) -> dict[str, np.ndarray]:
  """rewire params -> a PyTorch-named state dict of contiguous numpy arrays (no tied decoder entry)."""
  out = {}
  for path, x in flatten(jax.device_get(params)).items():
    name, transpose = pytorch_name(path)
    out[name] = np.ascontiguousarray(np.asarray(x).T if transpose else np.asarray(x))
  return out


def _some(names: Sequence[str], n: int = 4) -> str:
  names = sorted(names)
  more = f" and {len(names) - n} more" if len(names) > n else ""
  return ", ".join(names[:n]) + more


def check_params(flat: dict[str, Any], expected: dict[str, tuple[int, ...]], what: str) -> None:
  """UserError naming the unknown and missing keys of `flat` and its leaves whose shape is not `expected`."""
  unknown, missing = set(flat) - set(expected), set(expected) - set(flat)
  bad = [f"{k} {tuple(np.shape(flat[k]))} (expected {tuple(expected[k])})"
         for k in sorted(set(flat) & set(expected)) if tuple(np.shape(flat[k])) != tuple(expected[k])]
  problems = [f"{len(v)} {kind}: {_some(v, n)}" for kind, v, n in (
      ("unknown key(s)", unknown, 4), ("missing key(s)", missing, 4), ("shape mismatch(es)", bad, 3)) if v]
  if problems:
    raise UserError(f"{what}: " + "; ".join(problems))


def expected_shapes(info: ModelInfo) -> dict[str, tuple[int, ...]]:
  """Param path -> shape of the model `info` describes."""
  return {k: tuple(v.shape) for k, v in flatten(registry.abstract_params(info.make())).items()}


def from_pytorch(state: dict[str, np.ndarray], info: ModelInfo, what: str) -> dict[str, Any]:
  """A PyTorch-named state dict -> rewire params for `info`, checked key by key and shape by shape."""
  by_name = {}
  for path, shape in expected_shapes(info).items():
    name, transpose = pytorch_name(path)
    by_name[name] = (path, transpose, shape[::-1] if transpose else shape)
  if info.family.name == "llama":
    state = _tied_llama_head(state, "model.embed_tokens.weight", "lm_head.weight", info, what, transposed=False)
    state = {k: v for k, v in state.items() if not re.search(hf_llama.IGNORED_PT, k)}
  else:
    state = {k: v for k, v in state.items() if not _IGNORED_PT.search(k)} | _untied_bias(state, what)
  check_params(state, {name: shape for name, (_, _, shape) in by_name.items()},
               f"{what} does not fit {info.architecture}")
  return unflatten({path: state[name].T if t else state[name] for name, (path, t, _) in by_name.items()})


def _tied_llama_head(state: dict, emb_key: str, head_key: str, info: ModelInfo, what: str, *,
                     transposed: bool) -> dict:
  """`state` without the output-head copy of a tied Llama (HF Flax Llama always stores one); a copy that
  differs from the embeddings is a UserError."""
  if not info.config.tie_word_embeddings or head_key not in state:
    return state
  emb, head = state.get(emb_key), state[head_key]
  if emb is not None and not np.array_equal(head.T if transposed else head, emb):
    raise UserError(f"{what}: tie_word_embeddings is set but {head_key} differs from {emb_key}")
  return {k: v for k, v in state.items() if k != head_key}


def _untied_bias(state: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
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


# ----------------------------------------------------------------------------------------------------------
# Export.


def model_info_from_hf(d: dict[str, Any], what: str = "config.json") -> ModelInfo:
  """A HF RoBERTa/XLM-R config dict -> ModelInfo. UserError for other model types or unsupported options."""
  from transformers import RobertaConfig
  model_type = d.get("model_type")
  if model_type in hf_llama.MODEL_TYPES:
    return _llama_info_from_hf(d, what)
  if model_type not in ("roberta", "xlm-roberta"):
    raise UserError(f"{what}: model_type {model_type!r} is not supported; rewire imports roberta, "
                    f"xlm-roberta, {' and '.join(hf_llama.MODEL_TYPES)}")
  archs = d.get("architectures") or [f"{'XLM' if model_type == 'xlm-roberta' else ''}RobertaForMaskedLM"]
  arch = archs[0]
  for prefix in _HF_PREFIXES:
    arch = arch[len(prefix):] if arch.startswith(prefix) else arch
  task = next((arch[len(f):] for f in _HF_FAMILIES if arch.startswith(f)), None)
  if f"Roberta{task}" not in registry.ARCHITECTURES:
    raise UserError(f"{what}: architecture {archs[0]!r} is not supported; rewire imports "
                    f"{', '.join(registry.ARCHITECTURES)} (and their XLMRoberta/Flax forms)")
  c = RobertaConfig.from_dict({k: v for k, v in d.items() if k != "model_type"})
  unsupported = [f"{k}={getattr(c, k, None)!r}" for k, ok in (
      ("hidden_act", c.hidden_act == "gelu"),
      ("position_embedding_type", getattr(c, "position_embedding_type", "absolute") == "absolute"),
      ("is_decoder", not c.is_decoder), ("tie_word_embeddings", c.tie_word_embeddings)) if not ok]
  if unsupported:
    raise UserError(f"{what}: unsupported option(s) {', '.join(unsupported)}")
  config = ModelConfig(
      vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_layers=c.num_hidden_layers,
      num_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
      max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
      layer_norm_eps=float(c.layer_norm_eps), dropout=float(c.hidden_dropout_prob),
      attention_dropout=float(c.attention_probs_dropout_prob), init_std=float(c.initializer_range),
      pad_token_id=int(c.pad_token_id if c.pad_token_id is not None else 1))
  arch = f"Roberta{task}"
  if arch == registry.SEQUENCE_CLASSIFICATION:
    labels = tuple(str(c.id2label[i]) for i in range(c.num_labels))
    return ModelInfo(arch, config, c.num_labels, labels)
  return ModelInfo(arch, config)


def _llama_info_from_hf(d: dict[str, Any], what: str) -> ModelInfo:
  arch = (d.get("architectures") or ["LlamaForCausalLM"])[0]
  arch = arch[len("Flax"):] if arch.startswith("Flax") else arch
  task = arch.replace("Mistral", "Llama", 1)
  if task not in registry.LLAMA.architectures:
    raise UserError(f"{what}: architecture {arch!r} is not supported; rewire imports "
                    f"{', '.join(registry.LLAMA.architectures)} (and their Mistral/Flax forms)")
  config = hf_llama.config_from_hf(d, what)
  if task == registry.LLAMA.task_heads["classification"]:
    id2label = d.get("id2label") or {}
    n = int(d.get("num_labels") or len(id2label) or 2)
    labels = tuple(str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n))
    return ModelInfo(task, config, n, labels)
  return ModelInfo(task, config)


def _read_safetensors(paths: list[str]) -> tuple[dict[str, np.ndarray], bool]:
  """Arrays of one or more safetensors files, and whether they use Flax names (else PyTorch names)."""
  from safetensors import safe_open
  state, flax_names = {}, False
  for path in paths:
    with safe_open(path, framework="flax") as f:  # the jax reader handles bfloat16
      flax_names |= (f.metadata() or {}).get("format") == "flax"
      for k in f.keys():
        state[k] = np.asarray(f.get_tensor(k))
  flax_names |= any(k.rsplit(".", 1)[-1] in ("kernel", "scale", "embedding") for k in state)
  return state, flax_names


def read_hf_weights(hf_dir: str) -> tuple[dict[str, np.ndarray], str, str]:
  """(weights, "pt" or "flax" naming, the file read) from the first format found in `hf_dir`."""
  index = os.path.join(hf_dir, "model.safetensors.index.json")
  single = os.path.join(hf_dir, "model.safetensors")
  if os.path.isfile(index) or os.path.isfile(single):
    if os.path.isfile(single):
      paths = [single]
    else:
      with open(index) as f:
        paths = [os.path.join(hf_dir, p) for p in sorted(set(json.load(f)["weight_map"].values()))]
    state, flax_names = _read_safetensors(paths)
    if flax_names:
      state = {k.replace(".", "/"): v for k, v in state.items()}
    return state, "flax" if flax_names else "pt", paths[0] if len(paths) == 1 else index
  msgpack = os.path.join(hf_dir, "flax_model.msgpack")
  if os.path.isfile(msgpack):
    with open(msgpack, "rb") as f:
      tree = flax.serialization.msgpack_restore(f.read())
    tree = tree.get("params", tree) if isinstance(tree, dict) and set(tree) == {"params"} else tree
    return {k: np.asarray(v) for k, v in flatten(tree).items()}, "flax", msgpack
  binary = os.path.join(hf_dir, "pytorch_model.bin")
  if os.path.isfile(binary):
    try:
      import torch
    except ImportError as e:
      raise UserError(f"{binary} needs torch to read (pip install torch), or convert it to "
                      "model.safetensors") from e
    sd = torch.load(binary, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}, "pt", binary
  found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(hf_dir, "*")))
  raise UserError(f"no model.safetensors, flax_model.msgpack or pytorch_model.bin in {hf_dir} "
                  f"(found: {', '.join(found) or 'nothing'})")


def load_hf_params(hf_dir: str) -> tuple[ModelInfo, dict[str, Any]]:
  """Reads a local HF RoBERTa/XLM-R/Llama/Mistral dir into (ModelInfo, float32 rewire params), checking every key."""
  cfg_path = os.path.join(hf_dir, "config.json")
  if not os.path.isfile(cfg_path):
    raise UserError(f"{cfg_path} not found: is {hf_dir} a Hugging Face model directory?")
  with open(cfg_path) as f:
    info = model_info_from_hf(json.load(f), cfg_path)
  state, naming, source = read_hf_weights(hf_dir)
  state = {k: v.astype(np.float32) if v.dtype.kind == "f" or v.dtype.name == "bfloat16" else v
           for k, v in state.items()}
  if naming == "pt":
    return info, from_pytorch(state, info, source)
  flat = {k: v for k, v in state.items() if not _IGNORED_FLAX.search(k)}
  if info.family.name == "llama":
    flat = _tied_llama_head(flat, "model/embed_tokens/embedding", "lm_head/kernel", info, source, transposed=True)
  check_params(flat, expected_shapes(info), f"{source} does not fit {info.architecture}")
  return info, unflatten(flat)
