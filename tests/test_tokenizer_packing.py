"""Tests for rewire.data.tokenizer (id layout, round trips, save/load) and rewire.data.packing."""

import re

import numpy as np
import pytest
import tokenizers
from tokenizers import models, pre_tokenizers

from rewire.data import packing, sources
from rewire.data import tokenizer as T
from rewire.errors import UserError

SEQ_LEN = 16


@pytest.fixture(scope="module")
def docs():
  return sources.load_documents("bundled:en_web")[:300]


@pytest.fixture(scope="module")
def tok(docs):
  return T.train_tokenizer(docs, 2000)


def test_special_id_layout(tok):
  ids = T.special_ids(tok)
  assert (ids.bos, ids.pad, ids.eos, ids.unk) == (0, 1, 2, 3)
  assert ids.vocab_size == tok.get_vocab_size(with_added_tokens=True) == 2000
  assert ids.mask == ids.vocab_size - 1 == tok.token_to_id("<mask>")
  assert [tok.id_to_token(i) for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
  # Every ordinary id is a real piece, none of them special.
  assert all(tok.id_to_token(i) not in ("<s>", "<pad>", "</s>", "<unk>", "<mask>", None)
             for i in range(4, ids.mask))


def test_small_corpus_gives_fewer_pieces_mask_still_last(docs):
  small = T.train_tokenizer(docs[:3], 5000)
  ids = T.special_ids(small)
  assert ids.vocab_size < 5000
  assert ids.mask == ids.vocab_size - 1 == small.token_to_id("<mask>")


def test_round_trip_and_roberta_templates(tok):
  text = "In the beginning God created the heavens and the earth."
  enc = tok.encode(text)
  assert enc.ids[0] == 0 and enc.ids[-1] == 2 and 3 not in enc.ids
  assert tok.decode(enc.ids) == text
  assert tok.decode(tok.encode("  Light   and\ndarkness ").ids) == "Light and darkness"
  a = tok.encode("Let there be light", add_special_tokens=False).ids
  b = tok.encode("and there was light", add_special_tokens=False).ids
  assert tok.encode("Let there be light", "and there was light").ids == [0, *a, 2, 2, *b, 2]
  masked = tok.encode("God said <mask> be light").ids
  assert masked.count(T.special_ids(tok).mask) == 1


def test_save_load_identical(tok, tmp_path):
  path = str(tmp_path / "sub" / "tokenizer.json")
  T.save_tokenizer(tok, path)
  loaded = T.load_tokenizer(path)
  assert loaded.to_str() == tok.to_str()
  texts = ["Yahweh appeared to Abram.", "Ünïcödé ｆｕｌｌｗｉｄｔｈ text", "x" * 50]
  assert [e.ids for e in loaded.encode_batch(texts)] == [e.ids for e in tok.encode_batch(texts)]
  assert T.special_ids(loaded) == T.special_ids(tok)


def test_training_is_reproducible(docs):
  first = T.train_tokenizer(docs[:60], 600).to_str()
  assert T.train_tokenizer(docs[:60], 600).to_str() == first


def test_load_missing_tokenizer(tmp_path):
  with pytest.raises(UserError, match="not-there.json"):
    T.load_tokenizer(str(tmp_path / "not-there.json"))


def test_wrong_layout_rejected():
  vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "a": 5}
  bert = tokenizers.Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
  bert.pre_tokenizer = pre_tokenizers.Whitespace()
  with pytest.raises(UserError, match="wrong special-token layout"):
    T.special_ids(bert)


def test_training_errors():
  with pytest.raises(UserError, match="empty"):
    T.train_tokenizer(["", "  "], 100)
  with pytest.raises(UserError, match="vocab_size"):
    T.train_tokenizer(["some text"], 5)


def _check_layout(rows):
  for row in rows:
    assert row[0] == 0
    eos = np.flatnonzero(row == 2)
    assert len(eos) == 1, row
    body, tail = row[1:eos[0]], row[eos[0] + 1:]
    assert len(body) >= 1 and np.all(body >= 4)
    assert np.all(tail == 1)


def test_pack_ids_never_crosses_documents():
  # Document i consists only of id 10+i, so a row mixing documents would show two distinct ids.
  lengths = [0, 1, 13, 14, 15, 28, 29, 40, 0, 3]
  docs = [np.full(n, 10 + i, np.int32) for i, n in enumerate(lengths)]
  out = packing.pack_ids(docs, SEQ_LEN, bos=0, eos=2, pad=1)
  body = SEQ_LEN - 2
  assert out.shape == (sum(-(-n // body) for n in lengths), SEQ_LEN) and out.dtype == np.int32
  _check_layout(out)
  owners = []
  for row in out:
    content = set(row[row >= 4].tolist())
    assert len(content) == 1
    owners.append(content.pop() - 10)
  assert owners == sorted(owners)  # Rows follow document order, chunks consecutive.
  owners = np.array(owners)
  for i, n in enumerate(lengths):
    assert int((out[owners == i] >= 4).sum()) == n


def test_pack_documents_recovers_each_document(tok, docs):
  texts = [docs[0], "", "Short one.", docs[1][:200], "   ", docs[2]]
  out = packing.pack_documents(texts, tok, SEQ_LEN)
  _check_layout(out)
  expected = [tok.encode(t, add_special_tokens=False).ids for t in texts]
  expected = [e for e in expected if e]
  body = SEQ_LEN - 2
  row = 0
  for ids in expected:
    n_rows = -(-len(ids) // body)
    chunks = out[row:row + n_rows]
    recovered = np.concatenate([r[1:np.flatnonzero(r == 2)[0]] for r in chunks])
    assert recovered.tolist() == ids
    row += n_rows
  assert row == len(out)
  np.testing.assert_array_equal(packing.pack_documents(texts, tok, SEQ_LEN), out)


def test_pack_rejects_tiny_seq_len(tok):
  with pytest.raises(UserError, match="seq_len"):
    packing.pack_documents(["text"], tok, 2)


def test_a_vocabulary_smaller_than_the_alphabet_is_a_clear_error_naming_the_size():
  # 80 distinct characters (CJK-like: no spaces inside words), as the bundled Japanese Bible has 3,570.
  alphabet = [chr(0x4E00 + i) for i in range(80)]
  text = ["".join(alphabet[(i * 7 + j) % 80] for j in range(40)) for i in range(200)]
  with pytest.raises(UserError, match=r"data\.vocab_size=40 is too small for this text: its 80 distinct "
                                      r"characters .* use data\.vocab_size >= \d+") as e:
    T.train_tokenizer(text, 40)
  need = int(re.search(r">= (\d+)", str(e.value))[1])
  assert T.special_ids(T.train_tokenizer(text, need)).vocab_size > 80  # the size it names is enough to train
