"""Export: a rewire workdir's checkpoint as a Hugging Face model directory (`python -m rewire.hf export`).

It writes `config.json` (the family's HF config, architectures as in the workdir's `model.json`),
`flax_model.msgpack` (the params as the family's HF Flax classes read them, e.g. a tied Llama's `lm_head`
copy), `model.safetensors` with PyTorch names (kernels
transposed; a tied decoder is left out, as torch's `save_pretrained` does)
and, when the workdir has a `tokenizer.json`, the tokenizer files for `AutoTokenizer.from_pretrained`
(the same `tokenizer.json`, so it encodes exactly as rewire does, under `PreTrainedTokenizerFast`). An
export directory is refused if it holds anything but an earlier export of the same run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from typing import Any

import flax.serialization
import jax
import numpy as np

from rewire import workdir as rworkdir
from rewire.workdir import load_params
from rewire.data.tokenizer import load_tokenizer
from rewire.errors import UserError
from rewire.fileio import write_json_atomic
from rewire.workdir import HF_SPECIAL_IDS
from rewire.hf.convert import ModelInfo, check_params, expected_shapes, flatten, to_pytorch

_SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                   "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}


def hf_config(info: ModelInfo, bos_id: int = 0, eos_id: int = 2):
  """The `transformers` config of a rewire model (the family's config class, with the task's labels)."""
  cfg = info.family.hf_config(info.architecture, info.config, bos_id=bos_id, eos_id=eos_id)
  if info.architecture == info.family.task_heads.get("classification"):
    labels = info.labels or tuple(f"LABEL_{i}" for i in range(info.num_labels))
    cfg.num_labels = info.num_labels
    cfg.id2label, cfg.label2id = dict(enumerate(labels)), {name: i for i, name in enumerate(labels)}
  return cfg


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
  info = ModelInfo.read(workdir)
  params, step = load_params(workdir, step)
  params = jax.device_get(params)
  check_params(flatten(params), expected_shapes(info),
               f"checkpoint {step} of {workdir} does not fit its model.json ({info.architecture})")
  _check_export_target(workdir, out)
  os.makedirs(out, exist_ok=True)
  write_json_atomic(os.path.join(out, EXPORT_MARKER), {"workdir": os.path.abspath(workdir), "step": int(step)},
                    indent=None)
  tok_path = rworkdir.tokenizer_path(workdir)
  tok = load_tokenizer(tok_path) if os.path.isfile(tok_path) else None
  ids = [tok.token_to_id(t) if tok else None for t in ("<s>", "</s>")]
  config = hf_config(info, *(i if i is not None else d for i, d in zip(ids, (0, 2))))
  imported = rworkdir.read_model_info(workdir).get(HF_SPECIAL_IDS)
  if imported:  # an imported model (or a fine-tune of it) keeps the ids its own tokenizer uses
    for key, value in imported.items():
      setattr(config, key, value)
  config.save_pretrained(out)
  np_params = jax.tree.map(np.asarray, params)
  with open(os.path.join(out, "flax_model.msgpack"), "wb") as f:
    f.write(flax.serialization.to_bytes(info.family.hf_flax_params(info.architecture, info.config, np_params)))
  weights = os.path.join(out, "model.safetensors")
  save_file(to_pytorch(np_params), weights, metadata={"format": "pt"})
  # safetensors creates its file owner-only (0600); give it the mode every other exported file has.
  os.chmod(weights, os.stat(os.path.join(out, "config.json")).st_mode & 0o777)
  if os.path.isfile(tok_path):
    cfg = info.config
    offset = cfg.pad_token_id + 1 if info.family.position_offset else 0  # RoBERTa's positions skip the pad
    _write_tokenizer_files(tok_path, out, cfg.max_position_embeddings - offset)
  summary = {"out": os.path.abspath(out), "architecture": info.architecture, "step": int(step),
             "num_params": int(sum(x.size for x in jax.tree.leaves(np_params))), "files": sorted(os.listdir(out))}
  limits = info.family.hf_notes(info.config)
  if limits:
    summary["flax_note"] = (f"HF Flax {info.architecture} will not reproduce this model: " + "; ".join(limits)
                            + f" (PyTorch {info.architecture} will)")
  return summary
