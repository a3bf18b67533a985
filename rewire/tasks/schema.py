"""Task rows -> rewire's canonical example schemas, whatever the source called its fields.

NLI: `{"premise", "hypothesis", "label"}` with the label as a name (class indices map through the
source's label names, default the XNLI order); classify: `{"text", "label"}` (and `"id"` when the row has
one), the label a name, or a class index where the source names no classes (the task's `label_names` then
map it); QA: SQuAD's `{"id", "question", "context", "answers": {"text", "answer_start"}}`. Field aliases
(`sentence1`, `gold_label`, `sentence`, ...), multilingual text fields (`{"de": ...}`), answers nested or
flat or as a JSON string, and numpy values from hub rows are accepted. Errors name the row (`where`) and
the field. `enciphered` turns an example into its cipher-language twin (`rewire.data.cipher`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rewire.data import cipher
from rewire.errors import UserError
from rewire.tasks.names import NLI_LABELS

_ALIASES = {"premise": ("premise", "sentence1"), "hypothesis": ("hypothesis", "sentence2"),
            "label": ("label", "gold_label"), "text": ("text", "sentence")}
_UNLABELLED = ("-", "")
LABEL_FIELDS = _ALIASES["label"]
TEXT_FIELDS = {"nli": ("premise", "hypothesis"), "classify": ("text",), "qa": ("question", "context")}


def enciphered(example: dict[str, Any], task: str, seed: int) -> dict[str, Any]:
  """The same example in the cipher language of `seed`: its text enciphered; label, id and answer offsets
  unchanged (the cipher maps each character to one character, so offsets still point at the answer)."""
  out = dict(example)
  for key in TEXT_FIELDS[task]:
    out[key] = cipher.encipher(example[key], seed)
  if task == "qa":
    out["answers"] = {**example["answers"], "text": [cipher.encipher(t, seed) for t in example["answers"]["text"]]}
  return out


def label_name(value: Any, names: Sequence[str] | None, where: str,
               default: Sequence[str] | None = NLI_LABELS) -> str | int | None:
  """A label as a name: ints index `names` (else `default`, the XNLI order); None for unlabelled rows.

  With neither `names` nor `default`, a class index is returned as the int itself.
  """
  names = tuple(names) if names else (tuple(default) if default else None)
  if isinstance(value, bool) or value is None:
    raise UserError(f"{where}: label {value!r} is neither a class index nor a name")
  if isinstance(value, str):
    text = value.strip().lower()
    if text in _UNLABELLED:
      return None
    if not re.fullmatch(r"-?\d+", text):
      return text
    value = int(text)
  try:
    index = int(value)
  except (TypeError, ValueError):
    raise UserError(f"{where}: label {value!r} is neither a class index nor a name") from None
  if index != value:
    raise UserError(f"{where}: label {value!r} is not a whole class index")
  if index == -1:
    return None
  if names is None:
    if index < 0:
      raise UserError(f"{where}: label {index} is not a class index")
    return index
  if not 0 <= index < len(names):
    raise UserError(f"{where}: label {index} is outside the classes {list(names)}")
  return names[index]


def nli_example(row: Mapping[str, Any], where: str, names: Sequence[str] | None,
                 lang: str | None) -> dict[str, str] | None:
  label = label_name(_field(row, "label", where), names, where)
  if label is None:
    return None
  return {"premise": _text(_field(row, "premise", where), where, "premise", lang),
          "hypothesis": _text(_field(row, "hypothesis", where), where, "hypothesis", lang),
          "label": label}


def classify_example(row: Mapping[str, Any], where: str, names: Sequence[str] | None,
                     lang: str | None) -> dict[str, Any] | None:
  label = label_name(_field(row, "label", where), names, where, default=None)
  if label is None:
    return None
  example = {"text": _text(_field(row, "text", where), where, "text", lang), "label": label}
  if row.get("id") is not None:
    example["id"] = _text(row["id"], where, "id", lang)
  return example


def qa_example(row: Mapping[str, Any], where: str, lang: str | None) -> dict[str, Any]:
  example = {key: _text(_field(row, key, where), where, key, lang) for key in ("id", "question", "context")}
  example["answers"] = _answers(row, where)
  return example


def _field(row: Mapping[str, Any], key: str, where: str) -> Any:
  if not isinstance(row, Mapping):
    raise UserError(f"{where}: a record must be an object with named fields, not {type(row).__name__}")
  names = _ALIASES.get(key, (key,))
  for name in names:
    if row.get(name) is not None:
      return row[name]
  null = " (null)" if any(name in row for name in names) else ""
  raise UserError(f"{where}: missing field {' or '.join(repr(n) for n in names)}{null}; "
                  f"its fields: {', '.join(map(str, row)) or 'none'}")


def _text(value: Any, where: str, key: str, lang: str | None) -> str:
  value = plain(value)
  if isinstance(value, (int, float)) and key == "id" and not isinstance(value, bool):
    return str(value)
  if isinstance(value, Mapping):  # All-language XNLI: {lang: text} or {language: [..], translation: [..]}.
    want = lang or "en"
    if "language" in value and "translation" in value:
      value = dict(zip(value["language"], value["translation"]))
    if want not in value:
      raise UserError(f"{where}: field {key!r} has no {want!r} text; languages: {', '.join(map(str, value))}")
    value = value[want]
  if not isinstance(value, str):
    raise UserError(f"{where}: field {key!r} is {type(value).__name__}, not a string")
  return value


def _answers(row: Mapping[str, Any], where: str) -> dict[str, list[Any]]:
  if row.get("answer_text") is None or row.get("answer_start") is None:
    answers = plain(_field(row, "answers", where))
    if isinstance(answers, str):
      try:
        answers = json.loads(answers)
      except json.JSONDecodeError as e:
        raise UserError(f"{where}: field 'answers' is not valid JSON ({e.msg})") from e
    if isinstance(answers, list):  # SQuAD JSON: [{"text", "answer_start"}, ...].
      answers = {"text": [a.get("text") for a in answers if isinstance(a, Mapping)],
                 "answer_start": [a.get("answer_start") for a in answers if isinstance(a, Mapping)]}
  else:  # Flat single-answer columns, e.g. in a .tsv.
    answers = {"text": [row["answer_text"]], "answer_start": [row["answer_start"]]}
  if not isinstance(answers, Mapping) or "text" not in answers or "answer_start" not in answers:
    raise UserError(f"{where}: field 'answers' needs 'text' and 'answer_start' lists")
  texts, starts = list(plain(answers["text"])), list(plain(answers["answer_start"]))
  if not texts or len(texts) != len(starts):
    raise UserError(f"{where}: field 'answers' needs as many answer_start as text entries, at least one "
                    f"(got {len(texts)} and {len(starts)}); unanswerable questions are not supported")
  try:
    starts = [int(s) for s in starts]
  except (TypeError, ValueError):
    raise UserError(f"{where}: answer_start values must be integers, got {starts!r}") from None
  if not all(isinstance(t, str) for t in texts):
    raise UserError(f"{where}: answer texts must be strings, got {texts!r}")
  return {"text": texts, "answer_start": starts}


def same_language(row: Mapping[str, Any], lang: str) -> bool:
  for key in ("language", "lang"):
    value = plain(row.get(key))
    if isinstance(value, str):
      return value == lang
  return True


def plain(value: Any) -> Any:
  """numpy arrays/scalars and bytes (TFDS) as Python lists, numbers and strings."""
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if hasattr(value, "tolist") and not isinstance(value, (str, Mapping)):
    value = value.tolist()
  if isinstance(value, list):
    return [plain(v) for v in value]
  if isinstance(value, Mapping):
    return {k: plain(v) for k, v in value.items()}
  return value
