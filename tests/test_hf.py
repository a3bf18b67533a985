"""Tests for rewire.hf and rewire.models.heads: export/import against transformers 4.57.6 (Flax and PyTorch).

Every model is tiny and made here (a 12-update rewire run, or random transformers models with odd sizes);
nothing is downloaded. Numerical checks feed the same ids to both sides and allow a max abs diff of 1e-5;
weight round trips must be exact. Head and import checks use perturbed weights (non-zero biases, non-unit
LayerNorm scales), so a swapped, untransposed or ignored weight shows up.
"""

import json
import os

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from rewire.models import registry
from rewire import hf
from rewire.hf import convert as hf_convert
from rewire.workdir import load_params
from rewire.data.tokenizer import load_tokenizer
from rewire.errors import UserError
from rewire.models.roberta import RobertaConfig
from rewire.models.roberta_heads import RobertaForMaskedLM

TOL = 1e-5
B, L, M = 3, 20, 4
SENTENCES = ["Hello world.", "  Odd   spacing\tand\nnewlines  ", "Ünïcödé café — naïve façade ½ ﬁ",
             "日本語のテキスト", "emoji 🙂 and <mask> token", "", "A much longer sentence, with punctuation!?"]


def _inputs(vocab, pad, seed=0, length=L):
  """ids [B, L] (<s> ... </s>, then padding of varying length), mask, masked positions [B, M]."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(4, vocab - 1, size=(B, length))
  lengths = [length, length - 5, length // 2]
  mask = np.zeros((B, length), np.int32)
  for b, n in enumerate(lengths):
    ids[b, 0], ids[b, n - 1], ids[b, n:] = 0, 2, pad
    mask[b, :n] = 1
  positions = np.stack([rng.choice(n, M, replace=False) for n in lengths]).astype(np.int32)
  return ids.astype(np.int32), mask, positions


def _maxdiff(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _assert_trees_equal(a, b):
  fa, fb = hf_convert.flatten(jax.device_get(a)), hf_convert.flatten(jax.device_get(b))
  assert sorted(fa) == sorted(fb)
  for k in fa:
    np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


def _mlm_logits(cfg, params, ids, mask, positions):
  model = RobertaForMaskedLM(cfg)
  return jax.jit(lambda p, *a: model.apply({"params": p}, *a, deterministic=True))(params, ids, mask, positions)


def _hf_jit(model, params, ids, mask):
  """A transformers Flax model's forward pass, jitted (eager op-by-op dispatch takes seconds)."""
  return jax.jit(lambda p, i, m: model(i, attention_mask=m, params=p))(params, ids, mask)


def _gather(full, positions):
  return np.take_along_axis(np.asarray(full), positions[..., None], axis=1)


@pytest.fixture(scope="module")
def exported(tiny_runs, tmp_path_factory):
  """A trained tiny pretraining workdir exported to HF: (workdir, out, info, params)."""
  workdir, _ = tiny_runs("one_device")
  out = str(tmp_path_factory.mktemp("hf_export"))
  summary = hf.export_checkpoint(str(workdir), out)
  assert summary["architecture"] == "RobertaForMaskedLM" and summary["step"] == 12
  params, _ = load_params(str(workdir))
  return str(workdir), out, hf_convert.ModelInfo.read(str(workdir)), jax.device_get(params)


def test_export_loads_in_flax_and_matches(exported):
  from transformers import FlaxRobertaForMaskedLM
  workdir, out, info, params = exported
  model, hf_params = FlaxRobertaForMaskedLM.from_pretrained(out, _do_init=False)
  _assert_trees_equal(hf_params, params)  # every weight there, none left random
  ids, mask, positions = _inputs(info.config.vocab_size, info.config.pad_token_id)
  ours = _mlm_logits(info.config, params, ids, mask, positions)
  theirs = _gather(_hf_jit(model, hf_params, ids, mask).logits, positions)
  assert ours.shape == (B, M, info.config.vocab_size)
  assert _maxdiff(ours, theirs) <= TOL


def test_export_loads_in_pytorch_and_matches(exported):
  torch = pytest.importorskip("torch")
  from transformers import RobertaForMaskedLM as TorchMLM
  workdir, out, info, params = exported
  model, loading = TorchMLM.from_pretrained(out, output_loading_info=True)
  # No "newly initialized", unexpected or mismatched weights; the decoder is tied, not a copy.
  assert all(not v for v in loading.values()), loading
  assert model.lm_head.decoder.weight.data_ptr() == model.roberta.embeddings.word_embeddings.weight.data_ptr()
  state = load_file(os.path.join(out, "model.safetensors"))
  np.testing.assert_array_equal(state["roberta.encoder.layer.0.attention.self.query.weight"],
                                params["roberta"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"].T)
  ids, mask, positions = _inputs(info.config.vocab_size, info.config.pad_token_id, seed=1)
  with torch.no_grad():
    full = model.eval()(torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask)).logits.numpy()
  assert _maxdiff(_mlm_logits(info.config, params, ids, mask, positions), _gather(full, positions)) <= TOL


def test_round_trip_import_is_exact(exported, tmp_path):
  workdir, out, info, params = exported
  assert hf.main(["import", f"--hf={out}", f"--out={tmp_path / 'back'}"]) == 0
  back, step = load_params(str(tmp_path / "back"))
  assert step == 0
  _assert_trees_equal(back, params)
  assert hf_convert.ModelInfo.read(str(tmp_path / "back")) == info
  with open(os.path.join(workdir, "tokenizer.json")) as f, open(tmp_path / "back" / "tokenizer.json") as g:
    assert f.read() == g.read()
  # The same through the Flax msgpack alone.
  only_flax = tmp_path / "only_flax"
  only_flax.mkdir()
  for name in ("config.json", "flax_model.msgpack"):
    (only_flax / name).write_bytes(open(os.path.join(out, name), "rb").read())
  info2, back2 = hf_convert.load_hf_params(str(only_flax))
  assert info2 == info
  _assert_trees_equal(back2, params)


def test_autotokenizer_encodes_like_rewire(exported):
  from transformers import AutoTokenizer
  workdir, out, _, _ = exported
  ours = load_tokenizer(os.path.join(workdir, "tokenizer.json"))
  theirs = AutoTokenizer.from_pretrained(out)
  assert theirs.mask_token_id == ours.get_vocab_size() - 1 and theirs.pad_token_id == 1
  for s in SENTENCES:
    assert theirs(s)["input_ids"] == ours.encode(s).ids, s
  pair = (SENTENCES[0], SENTENCES[2])
  assert theirs(*pair)["input_ids"] == ours.encode(*pair).ids
  batch = theirs(SENTENCES, padding=True)["input_ids"]
  assert [row[:len(ours.encode(s).ids)] for row, s in zip(batch, SENTENCES)] == \
      [e.ids for e in ours.encode_batch(SENTENCES)]


# ----------------------------------------------------------------------------------------------------------
# Task heads.

HEAD_CFG = RobertaConfig(vocab_size=64, hidden_size=24, num_layers=2, num_heads=3, intermediate_size=40,
                       max_position_embeddings=30, layer_norm_eps=1e-5)


def _random_params(abstract, seed):
  """Random weights for a param shape tree, made in numpy (no compile): LayerNorm scales near 1."""
  rng = np.random.default_rng(seed)
  flat = {k: rng.normal(1.0 if k.endswith("scale") else 0.0, 0.05, v.shape).astype(np.float32)
          for k, v in hf_convert.flatten(abstract).items()}
  return hf_convert.unflatten(flat)


def _head_outputs(model, params, ids, mask):
  out = jax.jit(lambda p, i, m: model.apply({"params": p}, i, m, deterministic=True))(params, ids, mask)
  return np.concatenate([np.asarray(o) for o in (out if isinstance(out, tuple) else (out,))], axis=-1)


@pytest.mark.parametrize("arch", [registry.family().task_heads["classification"], registry.family().task_heads["span"]])
def test_heads_match_hf_and_export(arch, exported, tmp_path):
  import transformers
  torch = pytest.importorskip("torch")
  num_labels = 3 if arch == registry.family().task_heads["classification"] else None
  labels = ("entailment", "neutral", "contradiction") if num_labels else None
  info = hf_convert.ModelInfo(arch, HEAD_CFG, num_labels, labels)
  model = info.make()
  params = _random_params(registry.abstract_params(model), seed=3)
  expected_tree = {"roberta", "classifier"} if num_labels else {"roberta", "qa_outputs"}
  assert set(params) == expected_tree and "pooler" not in params["roberta"]
  ids, mask, _ = _inputs(HEAD_CFG.vocab_size, HEAD_CFG.pad_token_id, seed=2)
  ours = _head_outputs(model, params, ids, mask)

  def hf_outputs(o):
    parts = (o.logits,) if num_labels else (o.start_logits, o.end_logits)
    return np.concatenate([np.asarray(p) for p in parts], axis=-1)

  # Export a task workdir (with the pretraining run's tokenizer) and load it back three ways.
  workdir, out = str(tmp_path / "task"), str(tmp_path / "hf")
  with open(os.path.join(exported[0], "tokenizer.json")) as f:
    hf.write_workdir(workdir, info, params, f.read())
  with open(os.path.join(workdir, "model.json")) as f:  # metadata as finetune/assemble add it
    model_json = json.load(f)
  model_json.update(task="nli", max_len=L, assembled_from={"task": "x", "embeddings": "y"})
  with open(os.path.join(workdir, "model.json"), "w") as f:
    json.dump(model_json, f)
  assert hf_convert.ModelInfo.read(workdir) == info
  hf.export_checkpoint(workdir, out)
  loaded, loaded_params = getattr(transformers, f"Flax{arch}").from_pretrained(out, _do_init=False)
  _assert_trees_equal(loaded_params, params)  # so HF's head runs on exactly rewire's params
  assert _maxdiff(ours, hf_outputs(_hf_jit(loaded, loaded_params, ids, mask))) <= TOL
  pt, loading = getattr(transformers, arch).from_pretrained(out, output_loading_info=True)
  assert all(not v for v in loading.values()), loading
  if num_labels:
    assert pt.config.id2label == dict(enumerate(labels))
  with torch.no_grad():
    pt_out = pt.eval()(torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask))
  assert _maxdiff(ours, hf_outputs(pt_out)) <= TOL
  back_info, back = hf_convert.load_hf_params(out)
  assert back_info == info
  _assert_trees_equal(back, params)


# ----------------------------------------------------------------------------------------------------------
# Import of checkpoints that transformers wrote: sizes where 64 % heads != 0, 3 layers, eps 1e-12.

ODD = dict(vocab_size=50, hidden_size=60, num_hidden_layers=3, num_attention_heads=5, intermediate_size=37,
           max_position_embeddings=40, layer_norm_eps=1e-12, type_vocab_size=1, pad_token_id=1)


def _import_and_run(hf_dir, workdir, ids, mask):
  assert hf.import_checkpoint(hf_dir, workdir)["step"] == 0
  info = hf_convert.ModelInfo.read(workdir)
  assert (info.config.hidden_size, info.config.num_heads, info.config.num_layers) == (60, 5, 3)
  assert info.config.layer_norm_eps == 1e-12 and info.config.type_vocab_size == 1
  params, _ = load_params(workdir)
  if info.architecture != registry.family().lm:
    return info, params, _head_outputs(info.make(), params, ids, mask)
  every_position = np.tile(np.arange(L, dtype=np.int32), (B, 1))
  return info, params, _mlm_logits(info.config, params, ids, mask, every_position)


def test_import_flax_msgpack_written_by_transformers(tmp_path):
  from transformers import FlaxRobertaForMaskedLM, RobertaConfig
  model = FlaxRobertaForMaskedLM(RobertaConfig(**ODD), _do_init=False)
  hf_params = _random_params(model.params_shape_tree, seed=5)
  model.save_pretrained(tmp_path / "hf", params=hf_params)
  assert os.path.exists(tmp_path / "hf" / "flax_model.msgpack")
  ids, mask, _ = _inputs(50, 1, seed=4)
  _, params, ours = _import_and_run(str(tmp_path / "hf"), str(tmp_path / "wd"), ids, mask)
  _assert_trees_equal(params, hf_params)
  assert _maxdiff(ours, _hf_jit(model, hf_params, ids, mask).logits) <= TOL


def test_import_pytorch_checkpoints_written_by_transformers(tmp_path):
  torch = pytest.importorskip("torch")
  import transformers
  torch.manual_seed(0)
  ids, mask, _ = _inputs(50, 1, seed=6)
  cases = [  # (model, save_pretrained kwargs): sharded safetensors; XLM-R head as pytorch_model.bin.
      (transformers.RobertaForMaskedLM(transformers.RobertaConfig(**ODD)), dict(max_shard_size="100KB")),
      (transformers.XLMRobertaForSequenceClassification(transformers.XLMRobertaConfig(**ODD, num_labels=4)),
       dict(safe_serialization=False)),
  ]
  for i, (model, kw) in enumerate(cases):
    with torch.no_grad():
      for p in model.parameters():
        p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(tmp_path / f"hf{i}", **kw)
    with torch.no_grad():
      theirs = model.eval()(torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask)).logits.numpy()
    info, _, ours = _import_and_run(str(tmp_path / f"hf{i}"), str(tmp_path / f"wd{i}"), ids, mask)
    assert info.architecture == ("RobertaForMaskedLM", "RobertaForSequenceClassification")[i]
    assert _maxdiff(ours, theirs) <= TOL, info.architecture
  assert os.path.exists(tmp_path / "hf0" / "model.safetensors.index.json")
  assert os.path.exists(tmp_path / "hf1" / "pytorch_model.bin")


# ----------------------------------------------------------------------------------------------------------
# Bad input.


def _copy_export(exported, tmp_path, state_edit=None, config_edit=None):
  _, out, _, _ = exported
  d = tmp_path / "bad"
  d.mkdir()
  with open(os.path.join(out, "config.json")) as f:
    cfg = json.load(f)
  (d / "config.json").write_text(json.dumps(config_edit(cfg) if config_edit else cfg))
  state = load_file(os.path.join(out, "model.safetensors"))
  save_file(state_edit(state) if state_edit else state, str(d / "model.safetensors"), metadata={"format": "pt"})
  return str(d)


def test_import_rejects_unknown_missing_and_misshapen_keys(exported, tmp_path):
  def edit(state):
    state["roberta.encoder.layer.0.attention.self.qkv.weight"] = np.zeros((3, 3), np.float32)
    state["lm_head.extra.bias"] = np.zeros((3,), np.float32)
    del state["roberta.embeddings.LayerNorm.bias"]
    state["lm_head.dense.weight"] = np.zeros((32, 31), np.float32)
    return state

  with pytest.raises(UserError) as e:
    hf_convert.load_hf_params(_copy_export(exported, tmp_path, edit))
  msg = str(e.value)
  assert "\n" not in msg
  for part in ("2 unknown key(s)", "roberta.encoder.layer.0.attention.self.qkv.weight", "lm_head.extra.bias",
               "1 missing key(s): roberta.embeddings.LayerNorm.bias",
               "lm_head.dense.weight (32, 31) (expected (32, 32))"):
    assert part in msg, msg


def test_import_lists_a_few_keys_and_counts_the_rest(exported, tmp_path):
  d = _copy_export(exported, tmp_path, lambda s: {k.replace("roberta.", "bert."): v for k, v in s.items()})
  with pytest.raises(UserError, match=r"missing key\(s\): .* and \d+ more"):
    hf_convert.load_hf_params(d)


@pytest.mark.parametrize("edit, pattern", [
    (lambda c: {**c, "model_type": "bert", "architectures": ["BertForMaskedLM"]}, "model_type 'bert'"),
    (lambda c: {**c, "architectures": ["RobertaForCausalLM"]}, "architecture 'RobertaForCausalLM'"),
    (lambda c: {**c, "hidden_act": "relu"}, "hidden_act='relu'"),
    (lambda c: {**c, "hidden_size": 48}, r"24 shape mismatch.*lm_head.dense.weight \(32, 32\) \(expected \(48, 48\)\)"),
])
def test_import_rejects_unsupported_configs(exported, tmp_path, edit, pattern):
  with pytest.raises(UserError, match=pattern):
    hf_convert.load_hf_params(_copy_export(exported, tmp_path, config_edit=edit))


def test_import_rejects_untied_decoder_and_missing_files(exported, tmp_path, capsys):
  def untie(state):
    state["lm_head.decoder.weight"] = state["roberta.embeddings.word_embeddings.weight"] + 1
    return state

  with pytest.raises(UserError, match="lm_head.decoder.weight differs"):
    hf_convert.load_hf_params(_copy_export(exported, tmp_path, untie))
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "config.json").write_text(json.dumps({"model_type": "roberta", "vocab_size": 10}))
  assert hf.main(["import", f"--hf={empty}", f"--out={tmp_path / 'wd'}"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("rewire: error: no model.safetensors") and err.count("\n") == 1
  assert not os.path.exists(tmp_path / "wd")


def test_export_rejects_params_that_do_not_fit_model_json(exported, tmp_path):
  workdir, _, info, params = exported
  wd = str(tmp_path / "wd")
  hf.write_workdir(wd, info, params)
  model_json = json.load(open(os.path.join(wd, "model.json")))
  model_json.update(num_layers=2)
  json.dump(model_json, open(os.path.join(wd, "model.json"), "w"))
  with pytest.raises(UserError, match=r"16 missing key\(s\): roberta/encoder/layer/1/.*and 12 more"):
    hf.export_checkpoint(wd, str(tmp_path / "out"))
  with pytest.raises(UserError, match="already holds a model"):
    hf.write_workdir(wd, info, params)


def test_probe_runs_on_an_imported_model(exported, tmp_path):
  """`configs/probe.py` accepts a directory made by `python -m rewire.hf import` as `init_from`."""
  from test_probe import micro_probe
  from rewire.probe import stage as probe
  _, out, _, _ = exported
  assert hf.main(["import", f"--hf={out}", f"--out={tmp_path / 'imported'}"]) == 0
  c = micro_probe(tmp_path / "imported", seeds=1, languages="es=bundled:bible_es")
  with open(os.devnull, "w") as sink:
    result = probe.run(c, str(tmp_path / "probe"), log_stream=sink)
  assert result["step"] == 0 and set(result["results"]) == {"es"}
  assert os.path.isfile(tmp_path / "probe" / "probe.png")
