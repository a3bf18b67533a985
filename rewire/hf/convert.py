"""Conversion between rewire's param trees and Hugging Face checkpoints: names, shapes, `model.json`.

rewire's trees use HF's Flax names already (RoBERTa's and Llama's), so the Flax side is a
flatten/unflatten; PyTorch needs one explicit, reversible name/transpose map (`pytorch_name`, the same for
every family), written out here rather than through transformers' torch-dependent converters. What differs
between families (their HF configs, checkpoint entries to drop or check) is each family's own
(`rewire.models.family.Family`). `ModelInfo` is what a workdir's `model.json` says; `model_info_from_hf`
reads an HF `config.json` into one. `rewire.hf.export` and `rewire.hf.importer` build on these.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any, Sequence

import flax.serialization
import jax
import numpy as np
from flax import traverse_util

from rewire.models import registry
from rewire import workdir as rworkdir
from rewire.errors import UserError

@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What `model.json` says: the architecture, the network's shape, and the task's labels."""
  architecture: str
  config: Any                     # the family's config (RobertaConfig, LlamaConfig)
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
    info = cls(registry.info_architecture(d), config, num_labels, labels)
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
  state = info.family.hf_state_in(state, info.config, what, flax_names=False)
  check_params(state, {name: shape for name, (_, _, shape) in by_name.items()},
               f"{what} does not fit {info.architecture}")
  return unflatten({path: state[name].T if t else state[name] for name, (path, t, _) in by_name.items()})


# ----------------------------------------------------------------------------------------------------------
# Reading Hugging Face directories.


def model_info_from_hf(d: dict[str, Any], what: str = "config.json") -> ModelInfo:
  """An HF config dict -> ModelInfo, by its `model_type`. UserError for other types or unsupported options."""
  model_type = d.get("model_type")
  fam = next((f for f in registry.FAMILIES.values() if model_type in f.hf_model_types), None)
  if fam is None:
    types = [t for f in registry.FAMILIES.values() for t in f.hf_model_types]
    raise UserError(f"{what}: model_type {model_type!r} is not supported; rewire imports {', '.join(types)}")
  return ModelInfo(*fam.info_from_hf(d, what))


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
  """Reads a local HF dir of a registered family into (ModelInfo, float32 rewire params), checking every key."""
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
  flat = info.family.hf_state_in(state, info.config, source, flax_names=True)
  check_params(flat, expected_shapes(info), f"{source} does not fit {info.architecture}")
  return info, unflatten(flat)
