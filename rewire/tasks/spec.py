"""What differs between tasks, in one place: features, model, loss, predictions and scores.

`TaskSpec` lets one fine-tuning loop and one evaluator serve sentence-pair classification (NLI), single-text
classification ("classify") and extractive QA. Both classifications are a head on `<s>`, trained with cross
entropy and scored by accuracy; they differ only in the features (a pair or one text). Scores are
percentages; `primary` names the one that model selection maximises.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import numpy as np
import optax

from rewire.errors import UserError
from rewire.tasks import nli, qa, scoring
from rewire.tasks.names import NLI_LABELS, TASKS

CLASSIFICATION_TASKS = ("nli", "classify")
CLASSIFICATION, SPAN = "classification", "span"  # the task heads (`TaskSpec.head`)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  name: str
  label_names: tuple[str, ...] = ()
  max_len: int = 128
  doc_stride: int = 128
  max_query_len: int = 64

  @property
  def is_classification(self) -> bool:
    return self.name in CLASSIFICATION_TASKS

  @property
  def head(self) -> str:
    """The head the task needs: "classification" (a label from `<s>`) or "span" (start and end logits).

    A model family maps it to its architecture (`rewire.models.registry.Family.task_heads`).
    """
    return CLASSIFICATION if self.is_classification else SPAN

  @property
  def num_labels(self) -> int | None:
    return len(self.label_names) if self.is_classification else None

  @property
  def primary(self) -> str:
    return "accuracy" if self.is_classification else "f1"

  def features(self, examples: Sequence[Mapping[str, Any]], tok) -> Any:
    if self.name == "nli":
      return nli.prepare_features(examples, tok, max_len=self.max_len, label_names=self.label_names)
    if self.name == "classify":
      return nli.prepare_text_features(examples, tok, max_len=self.max_len, label_names=self.label_names)
    return qa.prepare_features(examples, tok, max_len=self.max_len, doc_stride=self.doc_stride,
                               max_query_len=self.max_query_len)

  def loss(self, outputs: Any, batch: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
    if self.is_classification:
      return optax.softmax_cross_entropy_with_integer_labels(outputs, batch["labels"]).mean()
    start, end = outputs
    return 0.5 * (optax.softmax_cross_entropy_with_integer_labels(start, batch["start_position"]).mean()
                  + optax.softmax_cross_entropy_with_integer_labels(end, batch["end_position"]).mean())

  def score(self, examples: Sequence[Mapping[str, Any]], features: Any, outputs: Any,
            lang: str = "en") -> dict[str, float]:
    """Scores in percent from the model outputs over all `features` (host numpy arrays)."""
    if self.is_classification:
      preds = np.asarray(outputs).argmax(-1)
      return {"accuracy": 100.0 * scoring.accuracy(preds, features.labels)}
    start, end = outputs
    predictions = qa.postprocess(examples, features, np.asarray(start), np.asarray(end))
    references = {str(ex["id"]): list(ex["answers"]["text"]) for ex in examples}
    if lang == "en":
      return scoring.squad_scores(predictions, references)
    return scoring.mlqa_scores(predictions, references, lang)


def make_spec(task: str, *, label_names: Sequence[str] = NLI_LABELS, max_len: int = 0,
              doc_stride: int = 128, max_query_len: int = 64) -> TaskSpec:
  if task not in TASKS:
    raise UserError(f"unknown task {task!r}; choose one of {TASKS}")
  max_len = max_len or (128 if task in CLASSIFICATION_TASKS else 384)
  return TaskSpec(task, tuple(label_names) if task in CLASSIFICATION_TASKS else (), max_len, doc_stride,
                  max_query_len)
