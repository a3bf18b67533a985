"""Hugging Face interop: export a rewire workdir to a model directory, and import one into a workdir.

Why: rewire's param trees already use HF's Flax RoBERTa names (`rewire.model`, `rewire.heads`), so
conversion is renaming-free on the Flax side; PyTorch needs one explicit, reversible name/transpose map,
written out here (as Levanter does) rather than going through transformers' torch-dependent converters.

  python -m rewire.hf export --checkpoint=runs/forget [--step=N] --out=hf/forget
  python -m rewire.hf import --hf=hf/xlm-roberta-base --out=runs/xlmr

Export writes `config.json` (a `RobertaConfig`, `model_type` "roberta", architectures as in the workdir's
`model.json`), `flax_model.msgpack` (the params, for `FlaxRoberta*.from_pretrained`), `model.safetensors`
with PyTorch names (kernels transposed; the tied decoder is left out, as torch's `save_pretrained` does)
and, when the workdir has a `tokenizer.json`, the tokenizer files for `AutoTokenizer.from_pretrained`
(the same `tokenizer.json`, so it encodes exactly as rewire does, under `PreTrainedTokenizerFast`).

Import reads a local RoBERTa or XLM-R directory (`model.safetensors`, sharded or not, with PyTorch or Flax
names; `flax_model.msgpack`; or `pytorch_model.bin` when torch is installed) and writes a workdir:
`model.json`, `tokenizer.json` (if the directory has one or a fast tokenizer can be built from it) and
`checkpoints/0` holding `{"step": 0, "params": ...}`, which later stages read with
`rewire.checkpoint.load_params`. Keys are checked both ways: unknown, missing or misshapen weights are a
`UserError` naming them. A pooler (unused by these heads) and the tied decoder copy are dropped.

`model.json` is `{"architecture": ..., **ModelConfig}`; task models add `"num_labels"` and optionally
`"label_names"` (by class id), which become HF's `id2label`; other keys (task settings, provenance) are
metadata that export ignores.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import re
import shutil
import sys
from typing import Any, Sequence

import flax.serialization
import jax
import numpy as np
from flax import traverse_util

from rewire import heads
from rewire import workdir as rworkdir
from rewire.checkpoint import load_params
from rewire.data.tokenizer import load_tokenizer
from rewire.errors import UserError
from rewire.model import ModelConfig

_SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                   "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}
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
  config: ModelConfig
  num_labels: int | None = None
  labels: tuple[str, ...] | None = None

  def make(self):
    return heads.make_model(self.architecture, self.config, self.num_labels)

  def to_json(self) -> dict[str, Any]:
    out: dict[str, Any] = {"architecture": self.architecture, **dataclasses.asdict(self.config)}
    if self.num_labels is not None:
      out["num_labels"] = self.num_labels
    if self.labels is not None:
      out["label_names"] = list(self.labels)
    return out


def read_model_info(workdir: str) -> ModelInfo:
  """Reads `model.json`; keys other than the architecture, ModelConfig fields and labels are metadata."""
  d = rworkdir.read_model_info(workdir)
  fields = {f.name for f in dataclasses.fields(ModelConfig)}
  num_labels = d.get("num_labels")
  labels = d.get("label_names", d.get("labels"))
  if labels is not None:
    labels = tuple(str(x) for x in labels)
    num_labels = len(labels) if num_labels is None else num_labels
  config = ModelConfig.from_dict({k: v for k, v in d.items() if k in fields})
  info = ModelInfo(d.get("architecture", heads.MLM), config, num_labels, labels)
  info.make()  # validates the architecture and num_labels
  return info


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
  return {k: tuple(v.shape) for k, v in flatten(heads.abstract_params(info.make())).items()}


def from_pytorch(state: dict[str, np.ndarray], info: ModelInfo, what: str) -> dict[str, Any]:
  """A PyTorch-named state dict -> rewire params for `info`, checked key by key and shape by shape."""
  by_name = {}
  for path, shape in expected_shapes(info).items():
    name, transpose = pytorch_name(path)
    by_name[name] = (path, transpose, shape[::-1] if transpose else shape)
  state = {k: v for k, v in state.items() if not _IGNORED_PT.search(k)} | _untied_bias(state, what)
  check_params(state, {name: shape for name, (_, _, shape) in by_name.items()},
               f"{what} does not fit {info.architecture}")
  return unflatten({path: state[name].T if t else state[name] for name, (path, t, _) in by_name.items()})


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


def hf_config(info: ModelInfo, bos_id: int = 0, eos_id: int = 2):
  """The `transformers.RobertaConfig` of a rewire model."""
  from transformers import RobertaConfig
  kw: dict[str, Any] = dict(info.config.to_hf_dict(), bos_token_id=bos_id, eos_token_id=eos_id,
                            architectures=[info.architecture], torch_dtype="float32")
  if info.architecture == heads.SEQUENCE_CLASSIFICATION:
    labels = info.labels or tuple(f"LABEL_{i}" for i in range(info.num_labels))
    kw.update(num_labels=info.num_labels, id2label=dict(enumerate(labels)),
              label2id={name: i for i, name in enumerate(labels)})
  return RobertaConfig(**kw)


def _write_tokenizer_files(tokenizer_path: str, out: str, model_max_length: int) -> None:
  """tokenizer.json (verbatim) + the configs that make AutoTokenizer a PreTrainedTokenizerFast over it."""
  tok = load_tokenizer(tokenizer_path)
  special = {k: v for k, v in _SPECIAL_TOKENS.items() if tok.token_to_id(v) is not None}
  shutil.copyfile(tokenizer_path, os.path.join(out, "tokenizer.json"))
  config = {"tokenizer_class": "PreTrainedTokenizerFast", **special, "model_max_length": model_max_length,
            "clean_up_tokenization_spaces": False, "model_input_names": ["input_ids", "attention_mask"]}
  for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", special)):
    with open(os.path.join(out, name), "w", encoding="utf-8") as f:
      json.dump(content, f, indent=2, ensure_ascii=False)


def export_checkpoint(workdir: str, out: str, step: int | None = None) -> dict[str, Any]:
  """Writes the model (and tokenizer) of `workdir`'s checkpoint (newest unless `step`) to HF dir `out`.

  Returns a summary: out, architecture, step, num_params, files.
  Raises:
    UserError: not a workdir, no such checkpoint, or params that do not fit `model.json`.
  """
  from safetensors.numpy import save_file
  info = read_model_info(workdir)
  params, step = load_params(workdir, step)
  params = jax.device_get(params)
  check_params(flatten(params), expected_shapes(info),
               f"checkpoint {step} of {workdir} does not fit its model.json ({info.architecture})")
  os.makedirs(out, exist_ok=True)
  tok_path = rworkdir.tokenizer_path(workdir)
  tok = load_tokenizer(tok_path) if os.path.isfile(tok_path) else None
  ids = [tok.token_to_id(t) if tok else None for t in ("<s>", "</s>")]
  hf_config(info, *(i if i is not None else d for i, d in zip(ids, (0, 2)))).save_pretrained(out)
  np_params = jax.tree.map(np.asarray, params)
  with open(os.path.join(out, "flax_model.msgpack"), "wb") as f:
    f.write(flax.serialization.to_bytes(np_params))
  save_file(to_pytorch(np_params), os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
  if os.path.isfile(tok_path):
    cfg = info.config
    _write_tokenizer_files(tok_path, out, cfg.max_position_embeddings - cfg.pad_token_id - 1)
  return {"out": os.path.abspath(out), "architecture": info.architecture, "step": int(step),
          "num_params": int(sum(x.size for x in jax.tree.leaves(np_params))), "files": sorted(os.listdir(out))}


# ----------------------------------------------------------------------------------------------------------
# Import.


def model_info_from_hf(d: dict[str, Any], what: str = "config.json") -> ModelInfo:
  """A HF RoBERTa/XLM-R config dict -> ModelInfo. UserError for other model types or unsupported options."""
  from transformers import RobertaConfig
  model_type = d.get("model_type")
  if model_type not in ("roberta", "xlm-roberta"):
    raise UserError(f"{what}: model_type {model_type!r} is not supported; rewire imports roberta and "
                    "xlm-roberta")
  archs = d.get("architectures") or [f"{'XLM' if model_type == 'xlm-roberta' else ''}RobertaForMaskedLM"]
  arch = archs[0]
  for prefix in _HF_PREFIXES:
    arch = arch[len(prefix):] if arch.startswith(prefix) else arch
  task = next((arch[len(f):] for f in _HF_FAMILIES if arch.startswith(f)), None)
  if f"Roberta{task}" not in heads.ARCHITECTURES:
    raise UserError(f"{what}: architecture {archs[0]!r} is not supported; rewire imports "
                    f"{', '.join(heads.ARCHITECTURES)} (and their XLMRoberta/Flax forms)")
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
  if arch == heads.SEQUENCE_CLASSIFICATION:
    labels = tuple(str(c.id2label[i]) for i in range(c.num_labels))
    return ModelInfo(arch, config, c.num_labels, labels)
  return ModelInfo(arch, config)


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
  """Reads a local HF RoBERTa/XLM-R dir into (ModelInfo, float32 rewire params), checking every key."""
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
  check_params(flat, expected_shapes(info), f"{source} does not fit {info.architecture}")
  return info, unflatten(flat)


def write_workdir(workdir: str, info: ModelInfo, params: Any, tokenizer_json: str | None = None,
                  note: dict[str, Any] | None = None) -> None:
  """A params-only rewire workdir: model.json, tokenizer.json (if given), checkpoints/0 = {step: 0, params}."""
  rworkdir.write_params(workdir, params, note)
  rworkdir.write_model_info(workdir, info.to_json())
  if tokenizer_json is not None:
    with open(rworkdir.tokenizer_path(workdir), "w", encoding="utf-8") as f:
      f.write(tokenizer_json)
  rworkdir.write_summary(workdir, {"finished": True, **(note or {})})


def _hf_tokenizer_json(hf_dir: str) -> str | None:
  """tokenizer.json text of `hf_dir`: the file itself, else a fast tokenizer built by transformers."""
  path = os.path.join(hf_dir, "tokenizer.json")
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      return f.read()
  try:
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(hf_dir, use_fast=True)
    return tok.backend_tokenizer.to_str(pretty=True) if tok.is_fast else None
  except Exception:  # noqa: BLE001 -- no (convertible) tokenizer there: import the weights only.
    return None


def import_checkpoint(hf_dir: str, out: str) -> dict[str, Any]:
  """Converts local HF model dir `hf_dir` into a new rewire workdir `out`; returns a summary."""
  if not os.path.isdir(hf_dir):
    raise UserError(f"{hf_dir} is not a directory (rewire imports local Hugging Face model directories)")
  info, params = load_hf_params(hf_dir)
  tokenizer_json = _hf_tokenizer_json(hf_dir)
  write_workdir(out, info, params, tokenizer_json, {"imported_from": os.path.abspath(hf_dir)})
  return {"out": os.path.abspath(out), "architecture": info.architecture, "step": 0,
          "num_params": int(sum(x.size for x in jax.tree.leaves(params))),
          "tokenizer": tokenizer_json is not None}


# ----------------------------------------------------------------------------------------------------------
# Command line.


class _Parser(argparse.ArgumentParser):
  def error(self, message: str) -> None:  # one line, like every other rewire error
    print(f"rewire: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: Sequence[str] | None = None) -> int:
  parser = _Parser(prog="python -m rewire.hf", description="Hugging Face export and import.")
  sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
  ex = sub.add_parser("export", help="rewire workdir -> Hugging Face model directory")
  ex.add_argument("--checkpoint", required=True, help="the rewire workdir")
  ex.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
  ex.add_argument("--out", required=True, help="the Hugging Face directory to write")
  im = sub.add_parser("import", help="Hugging Face model directory -> new rewire workdir")
  im.add_argument("--hf", required=True, help="a local RoBERTa or XLM-R directory")
  im.add_argument("--out", required=True, help="the rewire workdir to create")
  args = parser.parse_args(argv)
  try:
    if args.command == "export":
      summary = export_checkpoint(args.checkpoint, args.out, args.step)
    else:
      summary = import_checkpoint(args.hf, args.out)
  except UserError as e:
    print(f"rewire: error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(summary))
  return 0


if __name__ == "__main__":
  sys.exit(main())
