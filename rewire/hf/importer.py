"""Import: a local Hugging Face RoBERTa, XLM-R, Llama or Mistral directory as a new rewire workdir.

It reads `model.safetensors` (sharded or not, with PyTorch or Flax names), `flax_model.msgpack`, or
`pytorch_model.bin` when torch is installed (`rewire.hf.convert`), and writes `model.json`,
`tokenizer.json` (if the directory has one or a fast tokenizer can be built from it) and `checkpoints/0`
holding `{"step": 0, "params": ...}`, which any stage can start from (`init_from`). Keys are checked both
ways: unknown, missing or misshapen weights are a `UserError` naming them. A pooler (unused by these heads)
and the tied decoder copy are dropped.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax

from rewire import workdir as rworkdir
from rewire.errors import UserError
from rewire.hf.convert import ModelInfo, load_hf_params
from rewire.workdir import HF_SPECIAL_IDS, SPECIAL_ID_KEYS


def write_workdir(workdir: str, info: ModelInfo, params: Any, tokenizer_json: str | None = None,
                  note: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None) -> None:
  """A params-only rewire workdir: model.json (with `metadata`), tokenizer.json (if given), checkpoints/0 =
  {step: 0, params}."""
  rworkdir.write_params(workdir, params, note)
  rworkdir.write_model_info(workdir, {**info.to_json(), **(metadata or {})})
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
  with open(os.path.join(hf_dir, "config.json")) as f:
    hf = json.load(f)
  # The special ids its tokenizer uses (Llama: bos 1, Llama 3: 128000, pad often none): an export of this
  # model, or of a fine-tune that keeps its tokenizer, writes them back rather than rewire's own layout.
  ids = {k: hf.get(k) for k in SPECIAL_ID_KEYS}
  write_workdir(out, info, params, tokenizer_json, {"imported_from": os.path.abspath(hf_dir)},
                metadata={HF_SPECIAL_IDS: ids})
  return {"out": os.path.abspath(out), "architecture": info.architecture, "step": 0,
          "num_params": int(sum(x.size for x in jax.tree.leaves(params))),
          "tokenizer": tokenizer_json is not None}
