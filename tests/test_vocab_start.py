"""How new vocabulary rows start (`reinit.method`): each method on a known answer, the fallbacks and refusals,
fastText vectors that every process computes alike, and an adaptation that starts from its recipe."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rewire.errors import UserError
from rewire.vocab import pieces, sparse
from rewire.vocab.recipe import AuxSpace, Vocabularies, build, copied_rows, mean_and_covariance_draw

SPECIALS = {"bos": 0, "pad": 1, "eos": 2, "unk": 3}
OLD = ["<s>", "<pad>", "</s>", "<unk>", "▁casa", "▁perro", "ción", "▁the", "<mask>"]
NEW = ["<s>", "<pad>", "</s>", "<unk>", "Ġcasa", "▁gato", "ción", "x", "▁perros", "<mask>"]


def vocabularies(old=OLD, new=NEW):
  return Vocabularies(old, new, {**SPECIALS, "mask": len(old) - 1}, {**SPECIALS, "mask": len(new) - 1})


def old_rows(n=len(OLD), h=6, seed=0):
  return np.random.default_rng(seed).normal(size=(n, h))


def test_overlap_copies_exactly_the_rows_of_the_shared_pieces_and_the_special_tokens():
  recipe = build("overlap", vocabularies())
  old, fresh = old_rows(), np.full((len(NEW), 6), 7.0)
  new = recipe.apply(old, fresh, vocab_axis=0, seed=0)
  # "Ġcasa" is "▁casa" (a byte-level BPE word start), "ción" is itself; the specials match by role.
  copied = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 6: 6, 9: 8}
  for i in range(len(NEW)):
    np.testing.assert_array_equal(new[i], old[copied[i]] if i in copied else fresh[i])
  assert recipe.counts() == {"copied": 7, "mixed": 0, "random": 3}
  # The rows a recipe copies, known without building it (what reinit.train_rows=new keeps).
  for method in ("overlap", "mean", "random", "script"):
    np.testing.assert_array_equal(copied_rows(method, vocabularies()), build(method, vocabularies()).copy_from >= 0)
  # The same recipe along the vocabulary axis of an untied output head [H, V], and of a bias [V].
  head = recipe.apply(old.T, fresh.T, vocab_axis=1, seed=0)
  np.testing.assert_array_equal(head, new.T)
  bias = recipe.apply(np.arange(len(OLD), dtype=float), np.zeros(len(NEW)), vocab_axis=0, seed=0)
  assert bias.tolist() == [0, 1, 2, 3, 4, 0, 6, 0, 0, 8]


def test_random_copies_nothing():
  recipe = build("random", vocabularies())
  fresh = np.full((len(NEW), 6), 7.0)
  np.testing.assert_array_equal(recipe.apply(old_rows(), fresh, vocab_axis=0, seed=0), fresh)
  assert recipe.counts() == {"copied": 0, "mixed": 0, "random": len(NEW)}


@pytest.mark.parametrize("method", ["focus", "omp"])
def test_a_new_piece_with_a_shared_piece_s_auxiliary_vector_gets_that_piece_s_old_row(method):
  # Auxiliary vectors: the shared pieces "Ġcasa" (new 4) and "ción" (new 6) orthogonal; "▁gato" (new 5)
  # has exactly the vector of "ción"; "▁perros" (new 8) that of "Ġcasa"; "x" (new 7) never occurs.
  e = np.eye(4)
  aux = AuxSpace(np.array([4, 5, 6, 8]), np.stack([e[0], e[2], e[2], e[0]]))
  recipe = build(method, vocabularies(), aux=lambda: aux)
  old = old_rows()
  new = recipe.apply(old, np.full((len(NEW), 6), 7.0), vocab_axis=0, seed=0)
  np.testing.assert_allclose(new[5], old[6], atol=1e-9)  # "▁gato" <- old "ción"
  np.testing.assert_allclose(new[8], old[4], atol=1e-9)  # "▁perros" <- old "▁casa"
  np.testing.assert_array_equal(new[7], 7.0)  # no auxiliary vector: the fallback (random)
  assert recipe.counts() == {"copied": 7, "mixed": 2, "random": 1}
  # The rows it copies, known without its auxiliary vectors (what reinit.train_rows=new keeps on a resume).
  np.testing.assert_array_equal(copied_rows(method, vocabularies()), recipe.copy_from >= 0)


def test_focus_weights_mix_the_similar_shared_pieces_and_omp_reconstructs_a_combination():
  anchors = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
  (idx, w), = sparse.focus_weights(np.array([[1.0, 1.0, 0.0]]), anchors, temperature=0.1)
  assert sorted(idx.tolist()) == [0, 1] and np.allclose(w, 0.5)  # two equally similar anchors share the mass
  (idx, c), = sparse.omp_weights(np.array([[2.0, -3.0, 0.0]]), anchors, atoms=3)
  assert dict(zip(idx.tolist(), c.tolist())) == pytest.approx({1: -3.0, 0: 2.0})
  p = sparse.sparsemax(np.array([[0.3, 0.1, 2.0], [1.0, 1.0, 1.0]]))
  assert p.tolist()[0] == [0.0, 0.0, 1.0] and np.allclose(p[1], 1 / 3) and np.allclose(p.sum(axis=1), 1.0)
  # The partial sort (the threshold among the top entries) agrees with the full one, wide supports included.
  z = np.random.default_rng(0).normal(size=(200, 50)) * np.array([[0.01], [10.0]]).repeat(100, axis=0)
  full, partial = sparse.sparsemax(z, top=100), sparse.sparsemax(z, top=3)
  np.testing.assert_allclose(partial, full, atol=1e-12)
  assert (full[:100] > 0).sum(axis=1).min() > 4 and (full[100:] > 0).sum(axis=1).max() <= 3


def test_mean_draws_rows_with_the_old_rows_mean_and_covariance():
  rng = np.random.default_rng(1)
  old = rng.multivariate_normal([1.0, -2.0, 0.5], [[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]], size=4000)
  drawn = mean_and_covariance_draw(old, 40_000, seed=0)
  np.testing.assert_allclose(drawn.mean(axis=0), old.mean(axis=0), atol=0.03)
  np.testing.assert_allclose(np.cov(drawn.T, bias=True), np.cov(old.T, bias=True), atol=0.04)
  near_mean = mean_and_covariance_draw(old, 10, seed=0, scale=1e-9)  # Hugging Face's scale: the mean
  np.testing.assert_allclose(near_mean, np.broadcast_to(old.mean(axis=0), near_mean.shape), atol=1e-3)
  recipe = build("mean", vocabularies())
  assert recipe.counts() == {"copied": 5, "mixed": 0, "random": 5}  # the special tokens keep their rows


def test_script_takes_the_mean_of_the_old_rows_of_the_piece_s_script():
  old = ["<s>", "<pad>", "</s>", "<unk>", "▁кот", "▁дом", "▁cat", "12", "<mask>"]
  new = ["<s>", "<pad>", "</s>", "<unk>", "▁собака", "▁dog", "▁99", "\U000f0041", "<mask>"]
  assert [pieces.script(p) for p in new[4:8]] == ["CYRILLIC", "LATIN", pieces.COMMON, "PRIVATE USE"]
  recipe = build("script", vocabularies(old, new))
  rows = old_rows(len(old))
  out = recipe.apply(rows, np.full((len(new), 6), 7.0), vocab_axis=0, seed=0)
  np.testing.assert_allclose(out[4], rows[[4, 5]].mean(axis=0))
  np.testing.assert_allclose(out[5], rows[6])
  np.testing.assert_allclose(out[6], rows[7])  # digits: the Common script
  np.testing.assert_array_equal(out[7], 7.0)  # a script the old vocabulary lacks (the cipher's): random
  assert recipe.counts() == {"copied": 5, "mixed": 3, "random": 1}


def test_no_shared_piece_falls_back_with_one_note_and_too_little_text_is_refused():
  # The cipher's tokenizer shares only the special tokens and the bare word-start marker with the source's.
  cipher = ["<s>", "<pad>", "</s>", "<unk>", "▁", "\U000f0001\U000f0002", "\U000f0003", "<mask>"]
  source = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁casa", "<mask>"]
  recipe = build("focus", vocabularies(source, cipher), fallback="script",
                 aux=lambda: pytest.fail("nothing to mix: no auxiliary vectors are trained"))
  assert len(recipe.notes) == 1 and "share no piece" in recipe.notes[0] and "fallback=script" in recipe.notes[0]
  assert recipe.counts()["copied"] == 6  # the special tokens and the marker
  from rewire.vocab import aux_vectors
  with pytest.raises(UserError, match=r"too little text .*: 3 tokens, at least reinit\.aux_min_tokens=100"):
    aux_vectors.train(np.array([[0, 5, 6, 5, 2, 1]]), cipher, skip_ids=[0, 1, 2, 3, 7], dim=8, epochs=1,
                      window=2, min_count=1, min_tokens=100, seed=0)
  with pytest.raises(UserError, match="unknown reinit.method 'knn'"):
    build("knn", vocabularies())


FASTTEXT = """
import sys, numpy as np
from rewire.vocab import aux_vectors
rng = np.random.default_rng(0)
pieces = [f"p{i}" for i in range(40)]
text = rng.integers(0, 40, size=(60, 16))
space = aux_vectors.train(text, pieces, skip_ids=[0], dim=8, epochs=2, window=3, min_count=1, min_tokens=10, seed=3)
sys.stdout.write(space.ids.tobytes().hex() + " " + space.vectors.tobytes().hex())
"""


def test_fasttext_vectors_are_the_same_in_every_process():
  """Each host of a job trains the auxiliary vectors itself: they must not depend on Python's hash seed."""
  out = [subprocess.run([sys.executable, "-c", FASTTEXT], capture_output=True, text=True, check=True,
                        env=dict(os.environ, PYTHONHASHSEED=seed)).stdout for seed in ("1", "2")]
  assert out[0] == out[1] and len(out[0]) > 100


def test_an_adaptation_starts_from_its_recipe_and_reports_it(tiny_runs, tmp_path):
  """Relearned English: a new tokenizer on other English text shares most pieces with the source's. With
  `focus` the shared rows are the source's rows (the padding row zero, as RoBERTa keeps it), the rest are
  mixed from them, and the run says how many of each in its progress output and its summary."""
  import io
  import jax
  from conftest import adapt_config
  from rewire import sharding
  from rewire.data.sources import load_documents
  from rewire.data.tokenizer import load_tokenizer, save_tokenizer, special_ids, train_tokenizer
  from rewire.stages.pretrain import train_and_evaluate
  from rewire.stages.pretrain_setup import Setup
  from rewire.stages.new_vocab import vocabulary_recipe
  from rewire.stages.warm_start import initial_params
  from rewire.workdir import load_params
  source, _ = tiny_runs("one_device")
  docs = load_documents("bundled:en_web")[200:320]
  corpus = tmp_path / "english.txt"
  corpus.write_text("\n\n".join(docs))
  save_tokenizer(train_tokenizer(docs, 300), str(tmp_path / "tokenizer.json"))
  c = adapt_config(source, corpus)
  c.data.tokenizer = str(tmp_path / "tokenizer.json")
  c.total_steps = 2
  c.reinit.update(method="focus", aux_min_tokens=1000, aux_min_count=1, aux_dim=16)
  log = io.StringIO()
  summary = train_and_evaluate(c, str(tmp_path / "adapted"), devices=jax.devices()[:1], log_stream=log)
  started = summary["vocab_start"]
  assert started["method"] == "focus" and started["copied"] > 150 and started["mixed"] > 0
  assert started["copied"] + started["mixed"] + started["random"] == 300
  assert f"new rows: focus: {started['copied']:,} rows copied, {started['mixed']:,} mixed" in log.getvalue()
  assert json.load(open(tmp_path / "adapted" / "summary.json"))["vocab_start"] == started
  # The run's first params, as it built them: the shared pieces' rows are the source's, bit for bit.
  new_tok = load_tokenizer(c.data.tokenizer)
  corpus_ids = lambda: pytest.fail("only focus and omp read the text")
  c.reinit.method = "overlap"
  recipe = vocabulary_recipe(c, new_tok, corpus_ids)
  assert recipe.counts()["copied"] == started["copied"]
  setup = Setup(c, sharding.make_mesh(c.mesh, jax.devices()[:1]), special_ids(new_tok))
  params = initial_params(c, setup.abstract_state["params"], pad_id=1, recipe=recipe)
  emb = lambda p: np.asarray(p["roberta"]["embeddings"]["word_embeddings"]["embedding"])
  new_emb, old_emb = emb(params), emb(load_params(str(source))[0])
  old_tok = load_tokenizer(os.path.join(str(source), "tokenizer.json"))
  shared = [p for p in new_tok.get_vocab() if old_tok.token_to_id(p) is not None and p != "<pad>"]
  assert len(shared) == started["copied"] - 1
  for p in shared:
    np.testing.assert_array_equal(new_emb[new_tok.token_to_id(p)], old_emb[old_tok.token_to_id(p)], err_msg=p)
  assert not new_emb[1].any() and old_emb[1].any()  # RoBERTa's padding row: zero, whatever the source's
  bias = np.asarray(params["lm_head"]["bias"])
  assert bias[new_tok.token_to_id(shared[-1])] == np.asarray(load_params(str(source))[0]["lm_head"]["bias"])[
      old_tok.token_to_id(shared[-1])]


def test_a_decoder_s_untied_head_starts_along_its_vocabulary_axis(family_runs, tmp_path):
  """Llama: the shared pieces' input rows and output-head columns ([H, V]) are the source's, and the padding
  row is copied like any special token (the family keeps no zero padding row)."""
  import jax
  from conftest import adapt_config
  from rewire import sharding
  from rewire.data.sources import load_documents
  from rewire.data.tokenizer import load_tokenizer, save_tokenizer, special_ids, train_tokenizer
  from rewire.stages.pretrain_setup import Setup
  from rewire.stages.new_vocab import vocabulary_recipe
  from rewire.stages.warm_start import adopt_model_shape, initial_params
  from rewire.workdir import load_params
  source, _ = family_runs("llama", "pretrained")
  save_tokenizer(train_tokenizer(load_documents("bundled:en_web")[200:320], 300), str(tmp_path / "tokenizer.json"))
  c = adapt_config(source, tmp_path / "unused.txt")
  c.reinit.method = "overlap"
  adopt_model_shape(c)
  new_tok, old_tok = load_tokenizer(str(tmp_path / "tokenizer.json")), load_tokenizer(os.path.join(str(source), "tokenizer.json"))
  recipe = vocabulary_recipe(c, new_tok, lambda: pytest.fail("overlap reads no text"))
  setup = Setup(c, sharding.make_mesh(c.mesh, jax.devices()[:1]), special_ids(new_tok))
  new = initial_params(c, setup.abstract_state["params"], pad_id=1, recipe=recipe)
  old = load_params(str(source))[0]
  pick = lambda p: (np.asarray(p["model"]["embed_tokens"]["embedding"]), np.asarray(p["lm_head"]["kernel"]))
  (new_in, new_out), (old_in, old_out) = pick(new), pick(old)
  assert new_out.shape == (old_out.shape[0], 300)
  shared = [p for p in new_tok.get_vocab() if old_tok.token_to_id(p) is not None]
  assert len(shared) == recipe.counts()["copied"] > 100
  for p in shared:
    i, j = new_tok.token_to_id(p), old_tok.token_to_id(p)
    np.testing.assert_array_equal(new_in[i], old_in[j], err_msg=p)
    np.testing.assert_array_equal(new_out[:, i], old_out[:, j], err_msg=p)
  assert old_in[1].any() and np.array_equal(new_in[1], old_in[1])


# -- extending the vocabulary instead of replacing it ---------------------------------------------------------

GREEK = str.maketrans("abcdefghiklmnoprstuxyz", "αβψδεφγηικλμνοπρστυχυζ")


def _half_greek(docs):
  """Every other word written in Greek letters: a 'language' whose Greek pieces the source cannot spell."""
  return [" ".join(w.translate(GREEK) if i % 2 else w for i, w in enumerate(d.split())) for d in docs]


def test_an_extended_tokenizer_keeps_every_old_id_and_adds_only_what_the_source_cannot_spell():
  from rewire.data.sources import load_documents
  from rewire.data.tokenizer import train_tokenizer
  from rewire.vocab.extend import extend_tokenizer
  docs = load_documents("bundled:en_web")
  old = train_tokenizer(docs[:200], 500)
  new = train_tokenizer(_half_greek(docs[200:400]), 500)
  ext = extend_tokenizer(old, new)
  size = ext.tokenizer.get_vocab_size()
  assert ext.old_size == 500 and ext.added > 30 and size == 500 + ext.added
  assert ext.tokenizer.token_to_id("<mask>") == size - 1  # rewire's layout: <mask> last
  assert all(any(ch in "αβψδεφγηικλμνοπρστυχζ" for ch in ext.tokenizer.id_to_token(i)) for i in range(499, size - 1))
  unseen = docs[400:460]  # English the source never saw: every id as before
  assert [e.ids for e in ext.tokenizer.encode_batch(unseen)] == [e.ids for e in old.encode_batch(unseen)]
  greek = _half_greek(docs[460:470])
  assert 3 in sum((e.ids for e in old.encode_batch(greek)), []) and 3 not in sum(
      (e.ids for e in ext.tokenizer.encode_batch(greek)), [])  # <unk> no more
  # A tokenizer of another kind (a BPE) cannot be extended: one line that says so.
  import tokenizers
  bpe = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
  bpe.train_from_iterator(docs[:20], tokenizers.trainers.BpeTrainer(vocab_size=100, special_tokens=["<unk>"]))
  with pytest.raises(UserError, match="extend needs unigram tokenizers of rewire's layout; the source's tokenizer "
                                      "is a BPE tokenizer"):
    extend_tokenizer(bpe, new)


def test_an_extended_adaptation_keeps_the_old_rows_trains_the_added_ones_and_exports(tiny_runs, tmp_path):
  """RoBERTa: the source's rows stay bit-identical (reinit.train_rows defaults to new when extending), the
  added rows train, the model assembles into a task model that scores English as the task model did, and the
  export loads in AutoTokenizer and encodes old text to the old ids."""
  import io
  import jax
  from conftest import adapt_config
  from transformers import AutoTokenizer
  from rewire import hf
  from rewire.data.sources import load_documents
  from rewire.data.tokenizer import load_tokenizer
  from rewire.stages.assemble import assemble
  from rewire.stages.pretrain import train_and_evaluate
  from rewire.workdir import load_params
  source, _ = tiny_runs("one_device")
  corpus = tmp_path / "half_greek.txt"
  corpus.write_text("\n\n".join(_half_greek(load_documents("bundled:en_web")[:120])))
  c = adapt_config(source, corpus)
  c.update(extend=True, total_steps=3, checkpoint_every=1, keep_checkpoints=3)
  log = io.StringIO()
  summary = train_and_evaluate(c, str(tmp_path / "adapted"), devices=jax.devices()[:1], log_stream=log)
  old_tok, ext_tok = (load_tokenizer(os.path.join(str(d), "tokenizer.json")) for d in (source, tmp_path / "adapted"))
  old_size, size = old_tok.get_vocab_size(), ext_tok.get_vocab_size()
  started = summary["vocab_start"]
  assert started["extension"] == {"old_size": old_size, "added": size - old_size} and size > old_size
  assert started["method"] == "overlap" and started["copied"] == old_size and started["random"] == size - old_size
  assert f"extended the source's {old_size:,} ids by {size - old_size:,} pieces" in log.getvalue()
  emb = lambda p: np.asarray(p["roberta"]["embeddings"]["word_embeddings"]["embedding"])
  before, after = emb(load_params(str(source))[0]), emb(load_params(str(tmp_path / "adapted"))[0])
  # Every old row bit for bit, but the padding row, which the family keeps at zero; <mask> moved to the end.
  kept = np.setdiff1d(np.arange(old_size - 1), [1])
  np.testing.assert_array_equal(after[kept], before[kept])
  np.testing.assert_array_equal(after[size - 1], before[old_size - 1])
  assert not after[1].any() and before[1].any()
  # The added rows trained: each moved between update 1 and update 3.
  first = emb(load_params(str(tmp_path / "adapted"), 1)[0])
  assert (np.abs(after[old_size - 1:size - 1] - first[old_size - 1:size - 1]).max(axis=1) > 0).all()
  # Assembled into the English task model, the extended model scores English exactly as the task model does:
  # English keeps its ids and its rows, so zero-shot evaluation sees the same inputs and the same weights.
  from rewire import sharding
  from rewire.stages.evaluate import evaluate_model
  task = str(tiny_runs("finetuned_nli")[0])
  assemble(task, str(tmp_path / "adapted"), str(tmp_path / "assembled"))
  assert load_tokenizer(str(tmp_path / "assembled" / "tokenizer.json")).get_vocab_size() == size
  mesh = sharding.make_mesh(c.mesh, jax.devices()[:1])
  rules = sharding.rules_from_config(c.mesh.rules)
  score = lambda model: evaluate_model(model, "bundled:verse_nli:test", "en", mesh=mesh, rules=rules, batch_size=32,
                                       max_examples=64)
  assert score(str(tmp_path / "assembled")) == score(task)
  hf.export_checkpoint(str(tmp_path / "adapted"), str(tmp_path / "hf"))
  theirs = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
  english = load_documents("bundled:en_web")[300:305]
  assert [theirs(d)["input_ids"] for d in english] == [old_tok.encode(d).ids for d in english]
