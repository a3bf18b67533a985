"""Hugging Face interop: export a rewire workdir to a model directory, and import one into a workdir.

Why: rewire's param trees already use HF's Flax RoBERTa names (`rewire.models.roberta`, `rewire.models.heads`), so
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
import json
import os
import shutil
import sys
from typing import Any, Sequence

import flax.serialization
import jax
import numpy as np

from rewire.models import heads
from rewire import workdir as rworkdir
from rewire.checkpoint import load_params
from rewire.data.tokenizer import load_tokenizer
from rewire.errors import UserError
from rewire.hf.convert import (ModelInfo, check_params, expected_shapes, flatten, load_hf_params, read_model_info,
                               to_pytorch)

_SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                   "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}
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


EXPORT_MARKER = "rewire_export.json"


def _check_export_target(workdir: str, out: str) -> None:
  """`out` must be new, empty, or an earlier export of the same workdir (which is then replaced)."""
  import importlib.util
  if importlib.util.find_spec("transformers") is None:
    raise UserError("export needs transformers (for the config files): pip install -e '.[hf]' "
                    "(transformers==4.57.6)")
  if os.path.exists(out) and not os.path.isdir(out):
    raise UserError(f"--out {out} is a file; give a directory")
  if os.path.isdir(out) and os.listdir(out):
    marker = os.path.join(out, EXPORT_MARKER)
    source = None
    if os.path.isfile(marker):
      with open(marker) as f:
        source = json.load(f).get("workdir")
    if source != os.path.abspath(workdir):
      raise UserError(f"--out {out} already holds " + (f"an export of {source}" if source else "other files")
                      + "; choose a new directory")


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
  _check_export_target(workdir, out)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, EXPORT_MARKER), "w") as f:
    json.dump({"workdir": os.path.abspath(workdir), "step": int(step)}, f)
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

