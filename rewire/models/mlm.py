"""The masked-LM objective: on-device masking, the loss at masked positions, the evaluation step, the baseline.

Pretraining, language adaptation and the plasticity probe all train through it. `MaskedLM` is the objective
that `rewire.step.make_train_step` takes: `prepare` masks a token batch on device (outside the gradient)
and splits off the dropout key, `loss` is the cross-entropy and accuracy over the masked positions.
`unigram_loss` is the floor a trained model must beat (`rewire.step.make_eval_step` scores held-out text
through `inputs`, with a fixed masking per batch).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rewire.data import masking
from rewire.data.tokenizer import NUM_SPECIAL

@dataclasses.dataclass(frozen=True)
class MaskingSpec:
  mask_id: int
  pad_id: int
  vocab_size: int
  mask_prob: float
  max_predictions: int
  num_special: int = NUM_SPECIAL

  def __call__(self, rng: jax.Array, tokens: jax.Array) -> dict[str, jax.Array]:
    return masking.mask_tokens(rng, tokens, mask_id=self.mask_id, vocab_size=self.vocab_size,
                               num_special=self.num_special, mask_prob=self.mask_prob,
                               max_predictions=self.max_predictions)


def mlm_loss(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Mean cross-entropy and accuracy over the real predictions; also returns their count."""
  logits = logits.astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  n = weights.sum()
  denom = jnp.maximum(n, 1.0)
  # "The label's logit is the largest" -- a max-reduce, much cheaper on CPU than argmax's variadic reduce.
  label_logit = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  correct = (label_logit >= logits.max(-1)).astype(jnp.float32)
  return (ce * weights).sum() / denom, (correct * weights).sum() / denom, n


class MaskedLM:
  """The MLM objective of `model` (a family's LM) for `rewire.step.make_train_step` and the probe."""

  def __init__(self, model, masker: MaskingSpec):
    self.model, self.masker = model, masker

  def inputs(self, mask_rng: jax.Array, tokens: jax.Array) -> dict[str, jax.Array]:
    """The masked batch (ids, positions, labels, weights) and the attention mask of a token batch."""
    batch = self.masker(mask_rng, tokens)
    batch["attention_mask"] = (tokens != self.masker.pad_id).astype(jnp.int32)
    return batch

  def prepare(self, rng: jax.Array, tokens: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
    mask_rng, dropout_rng = jax.random.split(rng)
    return self.inputs(mask_rng, tokens), dropout_rng

  def loss(self, params, batch, rng, *, deterministic: bool = False):
    logits = self.model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                              batch["masked_positions"], deterministic=deterministic,
                              rngs=None if deterministic else {"dropout": rng})
    loss, acc, n = mlm_loss(logits, batch["masked_labels"], batch["masked_weights"])
    return loss, {"accuracy": acc, "predictions": n}


def unigram_loss(counts: np.ndarray, valid: np.ndarray, mask_id: int, num_special: int = NUM_SPECIAL) -> float:
  """Cross-entropy of validation tokens under the training unigram distribution (add-one smoothed).

  Masked positions are a uniform sample of the eligible tokens, so this is the loss of a model that
  predicts every masked token from token frequencies alone: the floor a trained MLM must beat.
  `counts` are the training tokens' counts (`vocab_size` long).
  """
  counts = counts.astype(np.float64).copy()
  vocab_size = counts.size
  counts[:num_special] = 0
  counts[mask_id] = 0
  probs = (counts + 1.0) / (counts.sum() + vocab_size - num_special - 1)
  v = valid.ravel()
  v = v[(v >= num_special) & (v != mask_id)]
  return float(-np.log(probs[v]).mean()) if v.size else float("nan")
