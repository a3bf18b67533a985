"""Evaluation metrics of the paper's tables: accuracy (XNLI), SQuAD and MLQA F1 / exact match, relative gain.

The QA metrics follow the definitions of the official evaluation scripts, so numbers are comparable with
published ones:

* SQuAD v1.1 (Rajpurkar et al. 2016): an answer is normalised by lower-casing, deleting ASCII punctuation
  (`string.punctuation`), deleting the English articles a/an/the as whole words and collapsing whitespace;
  it is then split on whitespace. Exact match compares the normalised strings; F1 is the harmonic mean of
  the bag-of-tokens precision and recall (0 when no token is shared). Each score is the maximum over the
  gold answers of a question, and a question without a prediction scores 0.
* MLQA (Lewis et al. 2020, arXiv 1910.07475), the same steps made language-aware, in the same order
  (lower-case, punctuation, articles, tokenisation):
  - punctuation is every character of a Unicode "P*" category plus `string.punctuation` (which adds the
    ASCII symbols $+<=>^`|~ that Unicode files under "S*");
  - articles: en a/an/the; es el/la/los/las/un/una/unos/unas; de der/die/das/des/dem/den and
    ein/eine/einer/eines/einem/einen; vi của/là/cái/chiếc/những (the list of the official MLQA script;
    they are classifiers and function words rather than articles); all as whole words. For ar, the
    official script replaces *every* occurrence of "ال" by a space (its regex meant to match only the
    word-initial article, but the alternative that matches everywhere wins); rewire does the same so
    that Arabic scores match published ones. Spanish "lo" is not removed, as in the official script.
    Other languages (hi, zh, el, ru, th, tr, ...) have no article removal.
  - tokenisation is whitespace splitting, except for languages written without spaces (zh, ja, th, lo,
    km, my), where each character of those scripts is its own token and runs of other characters (Latin
    words, digits) are split on whitespace ("mixed segmentation"). The official script knows only zh and
    only the ideographs U+4E00..U+9FA5; rewire also splits the rest of the CJK ideograph blocks, kana, and
    the Thai, Lao, Khmer and Myanmar scripts, so XQuAD's th is scored at character level.
* Headline statistic of Chen et al. (2023): the mean over languages of the relative gain 100·(F−S)/S.
* Transfer ratio: a zero-shot score as a share of the same model's score on the task in its own language.

Per-answer functions return fractions in [0, 1]; the dataset-level `*_scores` return percentages, as in the
papers' tables. `accuracy` returns a fraction.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from rewire.errors import UserError

_ASCII_PUNCT = frozenset(string.punctuation)
_SQUAD_ARTICLES = re.compile(r"\b(a|an|the)\b")

_MLQA_ARTICLES = {
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(el|la|los|las|un|una|unos|unas)\b"),
    "de": re.compile(r"\b(der|die|das|des|dem|den|ein|eine|einer|eines|einem|einen)\b"),
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    "ar": re.compile("ال"),
}
# Languages written without spaces between words: scored with mixed (character) segmentation.
MIXED_SEGMENTATION_LANGS = frozenset({"zh", "ja", "th", "lo", "km", "my"})
# Code-point ranges whose characters are single tokens under mixed segmentation.
_CHAR_TOKEN_RANGES = (
    (0x0E00, 0x0E7F),    # Thai
    (0x0E80, 0x0EFF),    # Lao
    (0x1000, 0x109F),    # Myanmar
    (0x1780, 0x17FF),    # Khmer
    (0x3040, 0x30FF),    # Hiragana, Katakana
    (0x3400, 0x4DBF),    # CJK Extension A
    (0x4E00, 0x9FFF),    # CJK Unified Ideographs
    (0xF900, 0xFAFF),    # CJK Compatibility Ideographs
    (0x20000, 0x3FFFF),  # CJK Extensions B and later (planes 2 and 3)
)


def accuracy(predictions: Sequence[int] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
  """The fraction (in [0, 1], not percent) of positions where `predictions` equals `labels`.

  Raises:
    UserError: the two have different shapes, or are empty.
  """
  p, y = np.asarray(predictions), np.asarray(labels)
  if p.shape != y.shape:
    raise UserError(f"accuracy: predictions have shape {p.shape} but labels have shape {y.shape}")
  if p.size == 0:
    raise UserError("accuracy: there are no predictions to score")
  return float(np.mean(p == y))


# ---------------------------------------------------------------------------------------------- SQuAD


def normalize_squad(text: str) -> str:
  """SQuAD v1.1 answer normalisation: lower-case, drop ASCII punctuation and a/an/the, collapse spaces."""
  text = "".join(c for c in text.lower() if c not in _ASCII_PUNCT)
  return " ".join(_SQUAD_ARTICLES.sub(" ", text).split())


def squad_f1(prediction: str, ground_truths: str | Iterable[str]) -> float:
  """The best SQuAD token F1 (in [0, 1]) of `prediction` against any of `ground_truths`."""
  pred = normalize_squad(prediction).split()
  return max(_token_f1(pred, normalize_squad(g).split()) for g in _golds(ground_truths))


def squad_em(prediction: str, ground_truths: str | Iterable[str]) -> float:
  """1.0 when `prediction` equals some ground truth after SQuAD normalisation, else 0.0."""
  pred = normalize_squad(prediction)
  return float(any(pred == normalize_squad(g) for g in _golds(ground_truths)))


def squad_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
  """SQuAD v1.1 dataset scores, in percent: {"f1": ..., "exact_match": ...}.

  Args:
    predictions: question id -> predicted answer text.
    references: question id -> its gold answer texts. Every reference question counts; one without a
      prediction scores 0 (as in the official script).

  Raises:
    UserError: no references, a question with no gold answer, or predictions for unknown ids (the
      predictions and references come from different sets).
  """
  return _dataset_scores(predictions, references, normalize_squad, "SQuAD")


# ----------------------------------------------------------------------------------------------- MLQA


def _is_punct(c: str) -> bool:
  return c in _ASCII_PUNCT or unicodedata.category(c).startswith("P")


def _is_char_token(c: str) -> bool:
  o = ord(c)
  return any(lo <= o <= hi for lo, hi in _CHAR_TOKEN_RANGES)


def _base_lang(lang: str) -> str:
  if not isinstance(lang, str) or not lang.strip():
    raise UserError(f"MLQA metrics need a language code such as 'de' or 'zh', got {lang!r}")
  return re.split(r"[-_]", lang.strip().lower())[0]


def mlqa_tokens(text: str, lang: str) -> list[str]:
  """The tokens that MLQA's metric compares: `text` normalised for `lang`, then segmented."""
  lang = _base_lang(lang)
  text = "".join(c for c in text.lower() if not _is_punct(c))
  articles = _MLQA_ARTICLES.get(lang)
  if articles is not None:
    text = articles.sub(" ", text)
  if lang not in MIXED_SEGMENTATION_LANGS:
    return text.split()
  tokens: list[str] = []
  run_start = 0
  for i, c in enumerate(text):
    if _is_char_token(c):
      tokens.extend(text[run_start:i].split())
      tokens.append(c)
      run_start = i + 1
  tokens.extend(text[run_start:].split())
  return tokens


def normalize_mlqa(text: str, lang: str) -> str:
  """MLQA answer normalisation for `lang`: its tokens joined by single spaces (what exact match compares)."""
  return " ".join(mlqa_tokens(text, lang))


def mlqa_f1(prediction: str, ground_truths: str | Iterable[str], lang: str) -> float:
  """The best MLQA token F1 (in [0, 1]) of `prediction` against any of `ground_truths`, for `lang`."""
  pred = mlqa_tokens(prediction, lang)
  return max(_token_f1(pred, mlqa_tokens(g, lang)) for g in _golds(ground_truths))


def mlqa_em(prediction: str, ground_truths: str | Iterable[str], lang: str) -> float:
  """1.0 when `prediction` equals some ground truth after MLQA normalisation for `lang`, else 0.0."""
  pred = normalize_mlqa(prediction, lang)
  return float(any(pred == normalize_mlqa(g, lang) for g in _golds(ground_truths)))


def mlqa_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                lang: str) -> dict[str, float]:
  """MLQA (and XQuAD) dataset scores for context language `lang`, in percent: {"f1", "exact_match"}.

  Same conventions and errors as `squad_scores`.
  """
  lang = _base_lang(lang)
  return _dataset_scores(predictions, references, lambda s: normalize_mlqa(s, lang), f"MLQA ({lang})")


# ------------------------------------------------------------------------------------------- shared


def _golds(ground_truths: str | Iterable[str]) -> list[str]:
  golds = [ground_truths] if isinstance(ground_truths, str) else list(ground_truths)
  if not golds:
    raise UserError("a question has no gold answers to compare with")
  return golds


def _token_f1(pred: list[str], gold: list[str]) -> float:
  same = sum((Counter(pred) & Counter(gold)).values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred), same / len(gold)
  return 2 * precision * recall / (precision + recall)


def _dataset_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                    normalize: Callable[[str], str], name: str) -> dict[str, float]:
  """Mean best-over-golds EM and F1 in percent; `normalize` returns space-separated tokens."""
  if not references:
    raise UserError(f"{name} scores: there are no reference questions")
  unknown = [k for k in predictions if k not in references]
  if unknown:
    raise UserError(f"{name} scores: {len(unknown)} predictions have ids not in the references "
                    f"(e.g. {unknown[0]!r}); are they from the same split?")
  f1 = em = 0.0
  for qid, answers in references.items():
    golds = [normalize(g) for g in _golds(answers)]
    if qid not in predictions:
      continue
    pred = normalize(predictions[qid])
    em += float(any(pred == g for g in golds))
    f1 += max(_token_f1(pred.split(), g.split()) for g in golds)
  n = len(references)
  return {"f1": 100.0 * f1 / n, "exact_match": 100.0 * em / n}


def relative_gain(forget: Mapping[str, float], standard: Mapping[str, float]) -> float:
  """The paper's headline statistic: mean over languages of 100·(F − S)/S, in percent.

  Args:
    forget: language -> score of the forgetting model (any unit, e.g. F1 or accuracy).
    standard: language -> score of the standard model, same languages and unit.
    (Scores may be arrays of one shape, e.g. bootstrap resamples: the gain is then elementwise.)

  Raises:
    UserError: the language sets differ or are empty, or a standard score is 0.
  """
  if set(forget) != set(standard):
    only_f = sorted(set(forget) - set(standard))
    only_s = sorted(set(standard) - set(forget))
    raise UserError(f"relative gain needs the same languages on both sides; only in forget: {only_f}, "
                    f"only in standard: {only_s}")
  if not forget:
    raise UserError("relative gain needs at least one language")
  zero = sorted(k for k, v in standard.items() if np.any(np.asarray(v) == 0))
  if zero:
    raise UserError(f"relative gain is undefined where the standard score is 0: {zero}")
  gain = np.mean([100.0 * (np.asarray(forget[k], np.float64) - standard[k]) / standard[k] for k in sorted(forget)],
                 axis=0)
  return float(gain) if np.ndim(gain) == 0 else gain


def transfer_ratio(zero_shot: float, ceiling: float, *, chance: float = 0.0) -> float:
  """Zero-shot score as a share of the task model's score in its own language (the ceiling), in percent.

  With `chance` > 0 (e.g. 50 for a balanced binary task), both scores are first measured from chance:
  100·(Z − c)/(E − c), which is 0 at chance and 100 at the ceiling. Scores in any one unit (e.g. %).

  Raises:
    UserError: a ceiling at or below chance (the English task model learnt nothing to transfer).
  """
  if ceiling <= chance:
    raise UserError(f"transfer ratio needs a ceiling above chance: ceiling {ceiling}, chance {chance}")
  return float(100.0 * (zero_shot - chance) / (ceiling - chance))
