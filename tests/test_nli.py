"""NLI features: RoBERTa pair layout, longest-first truncation, labels given as indices or names."""

import numpy as np
import pytest

from rewire.data.sources import load_documents
from rewire.data.tokenizer import train_tokenizer
from rewire.errors import UserError
from rewire.tasks.names import NLI_LABELS
from rewire.tasks.nli import prepare_features


@pytest.fixture(scope="module")
def tok():
  return train_tokenizer(load_documents("bundled:en_web")[:100], 1000)


def ids(tok, text):
  return tok.encode(text, add_special_tokens=False).ids


def test_pair_layout_and_labels(tok):
  examples = [
      {"premise": "The man is eating bread.", "hypothesis": "Someone eats.", "label": 0},
      {"premise": "It rained all day.", "hypothesis": "The sun was out all day.", "label": "contradiction"},
      {"premise": "A dog runs.", "hypothesis": "The dog is happy.", "label": np.int64(1)},
  ]
  feats = prepare_features(examples, tok, max_len=32, label_names=NLI_LABELS)
  assert feats.input_ids.shape == feats.attention_mask.shape == (3, 32) and len(feats) == 3
  assert feats.input_ids.dtype == np.int32
  assert list(feats.labels) == [0, 2, 1]
  for r, ex in enumerate(examples):
    p, h = ids(tok, ex["premise"]), ids(tok, ex["hypothesis"])
    want = [0, *p, 2, 2, *h, 2]
    row = list(feats.input_ids[r])
    assert row == want + [1] * (32 - len(want))
    assert list(feats.attention_mask[r]) == [1] * len(want) + [0] * (32 - len(want))
    # The layout is the tokenizer's own pair template.
    assert tok.encode(ex["premise"], ex["hypothesis"]).ids == want
  assert set(feats.arrays()) == {"input_ids", "attention_mask", "labels"}


def test_longer_segment_is_truncated_first(tok):
  long = " ".join(["the city of light and the river"] * 10)
  short = "A river."
  ls, ll = len(ids(tok, short)), len(ids(tok, long))
  assert ll > 40 and ls < 8
  feats = prepare_features([{"premise": long, "hypothesis": short, "label": 0},
                            {"premise": short, "hypothesis": long, "label": 0},
                            {"premise": long, "hypothesis": long + " again", "label": 0}],
                           tok, max_len=24, label_names=NLI_LABELS)
  assert feats.attention_mask.all()  # every row is full
  # Premise cut to 20 - ls tokens, hypothesis whole; and the mirror image.
  assert list(feats.input_ids[0]) == [0, *ids(tok, long)[:20 - ls], 2, 2, *ids(tok, short), 2]
  assert list(feats.input_ids[1]) == [0, *ids(tok, short), 2, 2, *ids(tok, long)[:20 - ls], 2]
  # Both long: 10 tokens each (hypothesis longer, so it is cut down to the premise first).
  h = ids(tok, long + " again")
  assert list(feats.input_ids[2]) == [0, *ids(tok, long)[:10], 2, 2, *h[:10], 2]
  # An odd budget: on a tie the premise loses the extra token.
  odd = prepare_features([{"premise": long, "hypothesis": long, "label": 0}], tok, max_len=25,
                         label_names=NLI_LABELS)
  assert list(odd.input_ids[0]) == [0, *ids(tok, long)[:10], 2, 2, *ids(tok, long)[:11], 2]


def test_label_and_input_errors(tok):
  ok = {"premise": "a", "hypothesis": "b", "label": 0}
  with pytest.raises(UserError, match=r"example 1 has label 'maybe'.*entailment"):
    prepare_features([ok, dict(ok, label="maybe")], tok, label_names=NLI_LABELS)
  with pytest.raises(UserError, match="example 2 has label 3"):
    prepare_features([ok, ok, dict(ok, label=3)], tok, label_names=NLI_LABELS)
  with pytest.raises(UserError, match="example 0 has label -1"):
    prepare_features([dict(ok, label=-1)], tok, label_names=NLI_LABELS)
  with pytest.raises(UserError, match="label True"):
    prepare_features([dict(ok, label=True)], tok, label_names=NLI_LABELS)
  with pytest.raises(UserError, match="example 1 has no 'hypothesis'"):
    prepare_features([ok, {"premise": "a", "label": 0}], tok, label_names=NLI_LABELS)
  with pytest.raises(UserError, match="distinct"):
    prepare_features([ok], tok, label_names=["yes", "yes"])
  with pytest.raises(UserError, match="max_len"):
    prepare_features([ok], tok, max_len=5, label_names=NLI_LABELS)
  two = prepare_features([dict(ok, label="no")], tok, label_names=["yes", "no"])
  assert list(two.labels) == [1]
