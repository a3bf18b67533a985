"""Known-answer tests of the task metrics: accuracy, SQuAD and MLQA F1 / EM, relative gain."""

import pytest

from rewire.errors import UserError
from rewire.tasks import scoring as m


def test_accuracy_is_a_fraction():
  assert m.accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == pytest.approx(0.75)
  assert m.accuracy([1], [1]) == 1.0
  with pytest.raises(UserError, match="shape"):
    m.accuracy([0, 1], [0, 1, 2])
  with pytest.raises(UserError, match="no predictions"):
    m.accuracy([], [])


def test_squad_normalisation_and_exact_match():
  assert m.normalize_squad("  The Eiffel-Tower, (in) PARIS!  ") == "eiffeltower in paris"
  assert m.squad_em("the Eiffel tower", ["Eiffel Tower"]) == 1.0
  assert m.squad_em("Eiffel", ["Eiffel Tower", "Tower"]) == 0.0
  # Articles go only as whole words: "theatre" keeps its "the"; "an" inside "and" stays.
  assert m.normalize_squad("the theatre and an opera") == "theatre and opera"
  # SQuAD removes only ASCII punctuation: the Chinese full stop survives.
  assert m.normalize_squad("巴黎。") == "巴黎。"


def test_squad_f1_by_hand():
  # pred tokens: eiffel tower in paris (4); gold: tower (1) -> P=1/4, R=1 -> F1 = 2*(1/4)/(5/4) = 0.4
  assert m.squad_f1("the Eiffel Tower in Paris", ["Tower"]) == pytest.approx(0.4)
  # Max over golds: against "in Paris France": same=2, P=2/4, R=2/3 -> F1 = 4/7.
  assert m.squad_f1("Eiffel Tower in Paris", ["Tower", "in Paris, France"]) == pytest.approx(4 / 7)
  # Tokens are a multiset: "paris paris" shares one token with "paris" -> P=1/2, R=1 -> F1 = 2/3.
  assert m.squad_f1("paris paris", "paris") == pytest.approx(2 / 3)
  assert m.squad_f1("London", ["Paris"]) == 0.0
  assert m.squad_f1("the", ["a"]) == 0.0  # both normalise to nothing: F1 0, as in the official script
  assert m.squad_em("the", ["a"]) == 1.0


def test_squad_scores_in_percent_and_missing_predictions():
  refs = {"q1": ["Eiffel Tower"], "q2": ["Paris"], "q3": ["1889"], "q4": ["Gustave Eiffel"]}
  preds = {"q1": "the Eiffel tower", "q2": "Paris, France", "q3": "1887"}  # q4 unanswered -> 0
  s = m.squad_scores(preds, refs)
  assert s["exact_match"] == pytest.approx(25.0)
  # F1: q1 1, q2 P=1/2 R=1 -> 2/3, q3 0, q4 0.
  assert s["f1"] == pytest.approx(100 * (1 + 2 / 3) / 4)
  with pytest.raises(UserError, match="not in the references"):
    m.squad_scores({"zz": "x"}, refs)
  with pytest.raises(UserError, match="no gold answers"):
    m.squad_scores({}, {"q1": []})
  with pytest.raises(UserError, match="no reference"):
    m.squad_scores({}, {})


def test_mlqa_chinese_is_scored_per_character():
  assert m.mlqa_tokens("北京大学", "zh") == ["北", "京", "大", "学"]
  # P = 2/4, R = 2/2 -> F1 = 2/3.
  assert m.mlqa_f1("北京大学", ["北京"], "zh") == pytest.approx(2 / 3)
  s = m.mlqa_scores({"a": "北京大学"}, {"a": ["北京"]}, "zh")
  assert s["f1"] == pytest.approx(66.6667, abs=1e-3) and s["exact_match"] == 0.0
  # Non-CJK runs stay whole, Chinese punctuation goes, and whitespace does not matter.
  assert m.mlqa_tokens("2008年 北京奥运会，Beijing Games。", "zh") == \
      ["2008", "年", "北", "京", "奥", "运", "会", "beijing", "games"]
  assert m.mlqa_em("北京 大学。", ["北京大学"], "zh") == 1.0
  # Under whitespace tokenisation (e.g. SQuAD, or hi) the same strings share no token.
  assert m.squad_f1("北京大学", ["北京"]) == 0.0
  # Thai (XQuAD) is scored per character too; zh_CN-style codes mean zh.
  assert m.mlqa_tokens("กรุงเทพ", "th") == list("กรุงเทพ")
  assert m.mlqa_f1("北京大学", ["北京"], "zh-CN") == pytest.approx(2 / 3)


def test_mlqa_arabic_article_and_punctuation():
  # "ال" goes (so "الكتاب" matches "كتاب"), and the Arabic comma and question mark are punctuation.
  assert m.mlqa_tokens("الكتاب، الجديد؟", "ar") == ["كتاب", "جديد"]
  assert m.mlqa_em("الكتاب", ["كتاب"], "ar") == 1.0
  # Like the official script, every "ال" goes, also inside a word: "المال" (the money) -> "م".
  assert m.mlqa_tokens("المال", "ar") == ["م"]
  # P = 1/2, R = 1 -> F1 = 2/3.
  assert m.mlqa_f1("الكتاب الجديد؟", ["كتاب"], "ar") == pytest.approx(2 / 3)
  # Other languages keep "ال" but still drop "؟" (Unicode punctuation); SQuAD's ASCII set keeps both.
  assert m.mlqa_tokens("الكتاب؟", "en") == ["الكتاب"]
  assert m.normalize_squad("الكتاب؟") == "الكتاب؟"


def test_mlqa_spanish_german_vietnamese_articles():
  assert m.normalize_mlqa("La Casa de los Espíritus", "es") == "casa de espíritus"
  assert m.mlqa_em("el Museo del Prado", ["Museo del Prado"], "es") == 1.0
  assert m.normalize_mlqa("lo mejor", "es") == "lo mejor"  # "lo" is kept, as in the official script
  assert m.normalize_mlqa("Der Hund und die Katze eines Mannes", "de") == "hund und katze mannes"
  assert m.mlqa_em("das Brandenburger Tor", ["Brandenburger Tor"], "de") == 1.0
  assert m.normalize_mlqa("những con mèo của tôi", "vi") == "con mèo tôi"
  # German articles are not removed for other languages, and "die" as an English word survives.
  assert m.normalize_mlqa("die Katze", "en") == "die katze"
  assert m.normalize_mlqa("The Hindi", "hi") == "the hindi"
  # Unicode punctuation (the em dash, guillemets, inverted question mark) is removed.
  assert m.normalize_mlqa("¿«Qué—es?»", "es") == "quées"
  with pytest.raises(UserError, match="language code"):
    m.mlqa_tokens("x", "")


def test_relative_gain():
  assert m.relative_gain({"de": 60.0, "ar": 40.0}, {"de": 50.0, "ar": 20.0}) == pytest.approx(60.0)
  assert m.relative_gain({"zh": 45.0}, {"zh": 50.0}) == pytest.approx(-10.0)
  # Arrays of scores (the study's bootstrap resamples) give the gain of each element.
  assert m.relative_gain({"de": [60.0, 55.0], "ar": [40.0, 20.0]},
                         {"de": [50.0, 50.0], "ar": [20.0, 20.0]}).tolist() == pytest.approx([60.0, 5.0])
  with pytest.raises(UserError, match="same languages"):
    m.relative_gain({"de": 1.0}, {"de": 1.0, "ar": 2.0})
  with pytest.raises(UserError, match="standard score is 0"):
    m.relative_gain({"de": 1.0}, {"de": 0.0})
  with pytest.raises(UserError, match="at least one"):
    m.relative_gain({}, {})
