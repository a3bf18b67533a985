"""Extractive-QA features and post-processing: windows, targets, and recovering gold answers from logits."""

import numpy as np
import pytest

from rewire.data.sources import load_documents
from rewire.data.tokenizer import train_tokenizer
from rewire.errors import UserError
from rewire.tasks import qa

ZH = [
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "长城是古代中国修建的军事防御工程，全长超过两万千米。",
    "黄河是中国第二长的河流，被称为中华民族的母亲河。",
    "上海位于长江入海口，是中国最大的经济中心城市之一。",
    "故宫建成于一四二零年，曾经是明清两代的皇家宫殿。",
    "大熊猫主要生活在四川、陕西和甘肃的山区竹林中。",
    "茶叶起源于中国，喝茶的习惯已经有几千年的历史。",
    "孔子是春秋时期的思想家和教育家，他的学说影响深远。",
    "西湖位于杭州市西部，以秀丽的湖光山色闻名于世。",
    "二零零八年夏季奥运会在北京举行，共有两百多个国家参加。",
]
AR = [
    "القاهرة هي عاصمة جمهورية مصر العربية وأكبر مدنها.",
    "يعد نهر النيل أطول نهر في العالم، ويمر عبر عدة دول أفريقية.",
    "بنيت الأهرامات في الجيزة قبل أكثر من أربعة آلاف عام.",
    "تشتهر مدينة دمشق بأسواقها القديمة وبيوتها التقليدية.",
    "اللغة العربية من أكثر اللغات انتشارا في العالم.",
    "يقع المسجد الأقصى في مدينة القدس القديمة.",
    "تعتبر الصحراء الكبرى أكبر صحراء حارة على وجه الأرض.",
    "درس الطالب الرياضيات والفيزياء في جامعة بغداد.",
    "هل تعرف متى تأسست مدينة الإسكندرية؟",
    "تمتد سلسلة جبال الأطلس عبر المغرب والجزائر وتونس.",
]
SHAPE = dict(max_len=64, doc_stride=20, max_query_len=16)


@pytest.fixture(scope="module")
def en():
  docs = load_documents("bundled:en_web")[:100]
  context = next(d for d in docs if 3000 < len(d) < 6000)
  return train_tokenizer(docs, 1000), context


@pytest.fixture(scope="module")
def zh_ar():
  return train_tokenizer(ZH * 3 + AR * 3, 300)


def token_spans(tok, text):
  """Whitespace-trimmed character spans of the tokens of `text`, straight from the tokenizer."""
  spans = []
  for b, e in tok.encode(text, add_special_tokens=False).offsets:
    piece = text[b:e]
    b += len(piece) - len(piece.lstrip())
    spans.append((b, b + len(piece.strip())))
  return [s for s in spans if s[1] > s[0]]


def aligned_examples(tok, context, every, width, question="What is it?"):
  """Examples whose answers are runs of `width` whole tokens, one starting at every `every`-th token."""
  spans = token_spans(tok, context)
  out = []
  for j in range(0, len(spans) - width, every):
    b, e = spans[j][0], spans[j + width - 1][1]
    out.append({"id": f"q{j}", "question": question, "context": context,
                "answers": {"text": [context[b:e]], "answer_start": [b]}})
  return out


def one_hot_logits(feats, which, rng):
  """Small noise everywhere, and a clear peak at the targets of the features in `which`."""
  start = rng.normal(0, 0.1, feats.input_ids.shape)
  end = rng.normal(0, 0.1, feats.input_ids.shape)
  for f in which:
    start[f, feats.start_position[f]] += 10
    end[f, feats.end_position[f]] += 10
  return start, end


def check_recovery(examples, feats, rng):
  """Each example's gold answer comes back from all its answer windows together, and from each alone."""
  in_overlap = 0
  for i, ex in enumerate(examples):
    mine = np.flatnonzero(feats.example_index == i)
    hits = [f for f in mine if feats.start_position[f] > 0]
    assert hits, f"answer {ex['answers']['text'][0]!r} is in no window"
    in_overlap += len(hits) > 1
    sub = qa.QAFeatures(**{k: v[mine] for k, v in vars(feats).items()})
    sub.example_index = np.zeros_like(sub.example_index)
    local = [int(np.flatnonzero(mine == f)[0]) for f in hits]
    for which in [local] + [[f] for f in local]:
      pred = qa.postprocess([ex], sub, *one_hot_logits(sub, which, rng))
      assert pred == {ex["id"]: ex["answers"]["text"][0]}
  return in_overlap


def test_window_layout_and_targets(en):
  tok, context = en
  examples = aligned_examples(tok, context, every=37, width=3)
  feats = qa.prepare_features(examples, tok, **SHAPE)
  q_ids = tok.encode("What is it?", add_special_tokens=False).ids
  c_ids = tok.encode(context, add_special_tokens=False).ids
  n_ctx = SHAPE["max_len"] - len(q_ids) - 4
  windows = np.flatnonzero(feats.example_index == 0)
  assert len(windows) == 1 + -(-(len(c_ids) - n_ctx) // SHAPE["doc_stride"]) > 10
  first = len(q_ids) + 3
  for w, f in enumerate(windows):
    row, mask = feats.input_ids[f], feats.attention_mask[f]
    length = int(mask.sum())
    assert mask[:length].all() and not mask[length:].any()
    assert (row[length:] == 1).all()
    assert row[0] == 0 and list(row[1:first - 2]) == q_ids and list(row[first - 2:first]) == [2, 2]
    assert row[length - 1] == 2
    start = w * SHAPE["doc_stride"]
    assert list(row[first:length - 1]) == c_ids[start:start + n_ctx]
    is_ctx = feats.offsets[f, :, 0] >= 0
    assert is_ctx[first:length - 1].all() and is_ctx.sum() == length - 1 - first
  assert windows.size * len(examples) == len(feats)
  # Targets point at the answer, and are 0 exactly when the answer is not whole in the window.
  for f in range(len(feats)):
    ex = examples[feats.example_index[f]]
    b = ex["answers"]["answer_start"][0]
    e = b + len(ex["answers"]["text"][0])
    off = feats.offsets[f]
    covered = off[off[:, 1] > off[:, 0]]
    inside = covered[:, 0].min() <= b and e <= covered[:, 1].max()
    s, t = feats.start_position[f], feats.end_position[f]
    assert (s > 0) == inside and (t > 0) == inside
    if inside:
      assert first <= s <= t and context[off[s, 0]:off[t, 1]] == ex["answers"]["text"][0]


def test_gold_answers_recovered_from_long_english_context(en):
  tok, context = en
  rng = np.random.default_rng(0)
  examples = aligned_examples(tok, context, every=29, width=2)
  assert len(examples) > 20
  feats = qa.prepare_features(examples, tok, **SHAPE)
  assert check_recovery(examples, feats, rng) > 10  # many answers sit in the overlap of two windows
  # All examples at once, with peaks at every answer window.
  hits = np.flatnonzero(feats.start_position > 0)
  preds = qa.postprocess(examples, feats, *one_hot_logits(feats, hits, rng))
  assert preds == {ex["id"]: ex["answers"]["text"][0] for ex in examples}


@pytest.mark.parametrize("lang", ["zh", "ar"])
def test_gold_answers_recovered_in_chinese_and_arabic(zh_ar, lang):
  context = "".join(ZH) if lang == "zh" else " ".join(AR)
  examples = aligned_examples(zh_ar, context, every=11, width=3, question=ZH[0][:8] if lang == "zh" else AR[8])
  feats = qa.prepare_features(examples, zh_ar, max_len=48, doc_stride=16, max_query_len=12)
  assert len(feats) > 3 * len(examples)
  assert check_recovery(examples, feats, np.random.default_rng(1)) > 0
  # Offsets point into the original text although NFKC maps "，" to ",".
  if lang == "zh":
    comma = context.index("，")
    assert any((feats.offsets[f] == [comma, comma + 1]).all(-1).any() for f in range(len(feats)))


def test_answer_inside_a_token_and_a_short_context(en):
  tok, _ = en
  context = "The Eiffel Tower was finished in 1889 for the World's Fair in Paris."
  b = context.index("iffel")
  examples = [{"id": "x", "question": "Which tower?", "context": context,
               "answers": {"text": ["iffel"], "answer_start": [b]}},
              {"id": "y", "question": "When?", "context": context, "answers": {"text": [], "answer_start": []}}]
  feats = qa.prepare_features(examples, tok)
  assert len(feats) == 2 and feats.input_ids.shape == (2, 384)
  s, e = feats.start_position[0], feats.end_position[0]
  span = context[feats.offsets[0, s, 0]:feats.offsets[0, e, 1]]
  assert "iffel" in span and span in context and len(span) < len("Eiffel Tower")
  assert feats.start_position[1] == feats.end_position[1] == 0  # no answer: targets at <s>


def test_postprocess_only_picks_valid_spans(en):
  tok, _ = en
  context = "one two three four five six seven eight nine ten"
  ex = [{"id": "a", "question": "q", "context": context, "answers": {"text": [], "answer_start": []}}]
  feats = qa.prepare_features(ex, tok, max_len=32, doc_stride=8, max_query_len=4)
  ctx = np.flatnonzero(feats.offsets[0, :, 0] >= 0)
  first, last = ctx[0], ctx[-1]
  start, end = np.full((1, 32), -100.0), np.full((1, 32), -100.0)
  start[0, 0] = end[0, 0] = 100  # <s> and padding are never chosen,
  start[0, 31] = end[0, 31] = 100
  start[0, last] = 50  # nor an end before the start,
  end[0, first] = 50
  start[0, first + 1] = 10
  end[0, first + 2] = 10
  assert qa.postprocess(ex, feats, start, end) == {"a": context[feats.offsets[0, first + 1, 0]:
                                                                  feats.offsets[0, first + 2, 1]]}
  # Nor a span longer than max_answer_len: "two" .. "ten" is last - first tokens.
  start, end = np.full((1, 32), -100.0), np.full((1, 32), -100.0)
  start[0, first + 1], end[0, last], end[0, first + 2] = 10, 10, 5
  assert qa.postprocess(ex, feats, start, end, max_answer_len=last - first)["a"] == context[4:]
  assert qa.postprocess(ex, feats, start, end, max_answer_len=last - first - 1)["a"] == "two three"
  # No valid span at all (every end before every start) gives "".
  start, end = np.full((1, 32), -100.0), np.full((1, 32), -100.0)
  assert qa.postprocess(ex, feats, start, end, n_best=1)["a"] == "one"
  start[0, last], end[0, first] = 5, 5
  assert qa.postprocess(ex, feats, start, end, n_best=1)["a"] == ""


def test_truncating_tokenizer_is_not_used_as_is(en):
  tok, context = en
  examples = aligned_examples(tok, context, every=200, width=1)
  want = qa.prepare_features(examples, tok, **SHAPE)
  from tokenizers import Tokenizer
  cut = Tokenizer.from_str(tok.to_str())
  cut.enable_truncation(20)
  cut.enable_padding(pad_id=1, pad_token="<pad>")
  got = qa.prepare_features(examples, cut, **SHAPE)
  assert all(np.array_equal(a, b) for a, b in zip(vars(want).values(), vars(got).values()))
  assert cut.truncation is not None  # the caller's tokenizer is left as it was


def test_user_errors(en):
  tok, _ = en
  good = {"id": "a", "question": "q", "context": "some text", "answers": {"text": ["text"], "answer_start": [5]}}
  with pytest.raises(UserError, match="doc_stride"):
    qa.prepare_features([good], tok, max_len=32, doc_stride=40, max_query_len=4)
  with pytest.raises(UserError, match="max_query_len"):
    qa.prepare_features([good], tok, max_len=32, max_query_len=30)
  with pytest.raises(UserError, match="example 1 has no 'context'"):
    qa.prepare_features([good, {"id": "b", "question": "q"}], tok)
  bad = dict(good, answers={"text": ["text"], "answer_start": [7]})
  with pytest.raises(UserError, match="example 0: answer 'text' at 7"):
    qa.prepare_features([bad], tok)
  with pytest.raises(UserError, match="empty context"):
    qa.prepare_features([dict(good, context="  ", answers={"text": [], "answer_start": []})], tok)
  feats = qa.prepare_features([good], tok, max_len=32, doc_stride=8, max_query_len=4)
  with pytest.raises(UserError, match="shape"):
    qa.postprocess([good], feats, np.zeros((1, 31)), np.zeros((1, 32)))
  with pytest.raises(UserError, match="only 0 examples"):
    qa.postprocess([], feats, np.zeros((1, 32)), np.zeros((1, 32)))
