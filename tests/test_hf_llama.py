"""Hugging Face interop of the Llama family: export to PyTorch and Flax, import of Llama and Mistral, refusals."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from rewire.workdir import load_params
from rewire.data.tokenizer import load_tokenizer
from rewire.errors import UserError
from rewire.hf import export_checkpoint, import_checkpoint
from rewire.hf.convert import ModelInfo, flatten
from rewire.models import registry

torch = pytest.importorskip("torch")
TEXT = "And God said, Let there be light: and there was light. And God saw the light."


def next_token_loss(logits, ids):
  logp = np.asarray(jax.nn.log_softmax(np.asarray(logits, np.float64)[:, :-1], axis=-1))
  return float(-np.take_along_axis(logp, ids[:, 1:, None], axis=-1).mean())


def rewire_logits(workdir, ids):
  info = ModelInfo.read(str(workdir))
  params, _ = load_params(str(workdir))
  return np.asarray(info.make().apply({"params": params}, ids, deterministic=True))


@pytest.fixture(scope="module")
def exported(family_runs, tmp_path_factory):
  workdir, _ = family_runs("llama", "adapted")
  out = tmp_path_factory.mktemp("hf") / "adapted"
  return workdir, out, export_checkpoint(str(workdir), str(out))


def test_an_exported_adapted_model_gives_the_same_next_token_loss_in_flax_and_pytorch(exported):
  from transformers import AutoTokenizer, FlaxLlamaForCausalLM, LlamaForCausalLM
  workdir, out, summary = exported
  assert {"config.json", "flax_model.msgpack", "model.safetensors", "tokenizer.json"} <= set(summary["files"])
  hf_tok = AutoTokenizer.from_pretrained(out)
  ours = load_tokenizer(os.path.join(workdir, "tokenizer.json")).encode(TEXT).ids
  assert hf_tok(TEXT)["input_ids"] == ours
  ids = np.asarray([ours[:32]], np.int32)  # the tiny model's 32 positions
  expected = rewire_logits(workdir, ids)
  flax_logits = np.asarray(FlaxLlamaForCausalLM.from_pretrained(out)(ids).logits)
  pt = LlamaForCausalLM.from_pretrained(out).eval()
  with torch.no_grad():
    pt_logits = pt(torch.from_numpy(ids).long()).logits.numpy()
  np.testing.assert_allclose(flax_logits, expected, atol=3e-5)
  np.testing.assert_allclose(pt_logits, expected, atol=3e-5)
  losses = [next_token_loss(x, ids) for x in (expected, flax_logits, pt_logits)]
  assert max(losses) - min(losses) < 1e-5, losses


def test_import_then_export_is_exact(exported, tmp_path):
  workdir, out, _ = exported
  summary = import_checkpoint(str(out), str(tmp_path / "imported"))
  assert summary["architecture"] == "LlamaForCausalLM" and summary["tokenizer"]
  a, b = flatten(load_params(str(workdir))[0]), flatten(load_params(str(tmp_path / "imported"))[0])
  assert set(a) == set(b)
  for k in a:
    np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)
  again = tmp_path / "again"
  export_checkpoint(str(tmp_path / "imported"), str(again))
  from safetensors.numpy import load_file
  x, y = load_file(os.path.join(out, "model.safetensors")), load_file(os.path.join(again, "model.safetensors"))
  assert set(x) == set(y) and all(np.array_equal(x[k], y[k]) for k in x)
  info = json.load(open(tmp_path / "imported" / "model.json"))
  assert info["num_kv_heads"] == 2 and info["tie_word_embeddings"] is False


def test_an_exported_classifier_matches_pytorch_sequence_classification(family_runs, tmp_path):
  from transformers import LlamaForSequenceClassification
  workdir, _ = family_runs("llama", "finetuned")
  export_checkpoint(str(workdir), str(tmp_path / "cls"))
  ids = np.full((2, 12), 1, np.int32)  # right-padded with <pad> = 1
  ids[0, :12] = np.arange(4, 16)
  ids[1, :7] = np.arange(20, 27)
  mask = (ids != 1).astype(np.int32)
  info = ModelInfo.read(str(workdir))
  ours = np.asarray(info.make().apply({"params": load_params(str(workdir))[0]}, ids, mask, deterministic=True))
  pt = LlamaForSequenceClassification.from_pretrained(tmp_path / "cls").eval()
  assert pt.config.id2label == {0: "narrative", 1: "discourse"}
  with torch.no_grad():
    theirs = pt(torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask)).logits.numpy()
  np.testing.assert_allclose(theirs, ours, atol=3e-5)


def _tiny_hf(model_type, **extra):
  from transformers import LlamaConfig, MistralConfig
  cls = {"llama": LlamaConfig, "mistral": MistralConfig}[model_type]
  return cls(vocab_size=80, hidden_size=32, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, **extra)


@pytest.mark.parametrize("model_type,fmt", [("mistral", "safetensors"), ("llama", "msgpack")])
def test_imported_checkpoints_compute_what_hugging_face_computes(model_type, fmt, tmp_path):
  from transformers import FlaxLlamaForCausalLM, LlamaForCausalLM, MistralForCausalLM
  torch.manual_seed(0)
  ids = np.random.default_rng(0).integers(0, 80, (2, 11)).astype(np.int32)
  if fmt == "safetensors":
    hf = MistralForCausalLM(_tiny_hf(model_type, sliding_window=None)).eval()
    hf.save_pretrained(tmp_path / "hf")
    with torch.no_grad():
      expected = hf(torch.from_numpy(ids).long()).logits.numpy()
  else:
    hf = FlaxLlamaForCausalLM(_tiny_hf(model_type, tie_word_embeddings=True), seed=0)
    hf.params = {**hf.params, "lm_head": {"kernel": np.asarray(hf.params["model"]["embed_tokens"]["embedding"]).T}}
    hf.save_pretrained(tmp_path / "hf")
    expected = np.asarray(hf(ids).logits)
    assert LlamaForCausalLM  # (the PyTorch class reads the same files; the export test covers it)
  summary = import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "rw"))
  assert summary["architecture"] == "LlamaForCausalLM"
  np.testing.assert_allclose(rewire_logits(tmp_path / "rw", ids), expected, atol=3e-5)
  if fmt == "msgpack":  # tied: the head copy HF Flax stores is dropped, the embedding is the head
    assert "lm_head" not in load_params(str(tmp_path / "rw"))[0]


@pytest.mark.parametrize("field,value,named", [
    ("sliding_window", 4096, "sliding_window=4096"),
    ("rope_scaling", {"rope_type": "linear", "factor": 2.0}, "rope_scaling="),
    ("attention_bias", True, "attention_bias=True")])
def test_an_unsupported_config_field_is_refused_in_one_line_that_names_it(field, value, named, tmp_path):
  model_type = "mistral" if field == "sliding_window" else "llama"
  d = _tiny_hf(model_type).to_dict()
  d.update({field: value, "architectures": ["MistralForCausalLM" if model_type == "mistral" else "LlamaForCausalLM"]})
  os.makedirs(tmp_path / "hf")
  json.dump(d, open(tmp_path / "hf" / "config.json", "w"))
  with pytest.raises(UserError, match=named):
    import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "rw"))
  env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  proc = subprocess.run([sys.executable, "-m", "rewire.hf", "import", f"--hf={tmp_path / 'hf'}",
                         f"--out={tmp_path / 'rw'}"], capture_output=True, text=True, env=env)
  assert proc.returncode == 2
  lines = [l for l in proc.stderr.splitlines() if l.startswith("rewire: error")]
  assert len(lines) == 1 and named in lines[0] and not os.path.exists(tmp_path / "rw")


def test_family_registry_resolves_leaf_set_names():
  llama, roberta = registry.family("llama"), registry.family("roberta")
  assert llama.resolve("both") == "model/embed_tokens/embedding|lm_head/kernel"
  assert roberta.resolve("vocab") == "roberta/embeddings/word_embeddings/embedding|lm_head/bias"
  assert roberta.resolve("embeddings") == roberta.word_embedding
  assert llama.resolve("model/norm/weight") == "model/norm/weight"
  with pytest.raises(UserError, match="no separate output head"):
    roberta.resolve("output")


def test_import_then_export_keeps_the_special_ids_of_the_imported_tokenizer(tmp_path):
  from transformers import LlamaForCausalLM
  torch.manual_seed(0)
  LlamaForCausalLM(_tiny_hf("llama", bos_token_id=1, eos_token_id=2, pad_token_id=None)).save_pretrained(
      tmp_path / "hf")
  import_checkpoint(str(tmp_path / "hf"), str(tmp_path / "rw"))
  export_checkpoint(str(tmp_path / "rw"), str(tmp_path / "out"))
  back = json.load(open(tmp_path / "out" / "config.json"))
  assert (back["bos_token_id"], back["eos_token_id"], back.get("pad_token_id")) == (1, 2, None)
  modes = {name: os.stat(tmp_path / "out" / name).st_mode & 0o777 for name in os.listdir(tmp_path / "out")}
  assert len(set(modes.values())) == 1, modes  # model.safetensors as readable as every other exported file
