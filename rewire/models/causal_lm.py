"""The next-token objective of decoder families: the loss over every real next token, and its baseline.

Pretraining, language adaptation and the probe train a decoder through it, as `rewire.models.mlm.MaskedLM`
trains an encoder; both fit `rewire.step.make_train_step` and `rewire.step.make_eval_step`. The
prepared corpora are already what a decoder needs: every row is `<s> text </s>` of one document, padded
on the right, so position t predicts token t + 1 and the loss is masked where that token is padding
(`</s>` is a target: the model learns where documents end). The head and its cross-entropy run as
`rewire.models.head_xent`, which never holds the [B, T, V] logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rewire.models.head_xent import head_xent


class CausalLM:
  """The next-token objective of `model` (a family's causal LM), with `pad_id` masked out of the targets."""

  def __init__(self, model, pad_id: int):
    self.model, self.pad_id = model, pad_id

  def inputs(self, rng: jax.Array, tokens: jax.Array) -> dict[str, jax.Array]:
    del rng  # nothing is sampled: every real next token is a prediction
    return {"input_ids": tokens}  # causal attention over right-padded rows needs no key mask

  def prepare(self, rng: jax.Array, tokens: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
    return self.inputs(rng, tokens), rng

  def loss(self, params, batch, rng, *, deterministic: bool = False):
    ids = batch["input_ids"]
    h, kernel = self.model.apply({"params": params}, ids, deterministic=deterministic, method="hidden_and_head",
                                 rngs=None if deterministic else {"dropout": rng})
    # Position t predicts token t + 1; the last position has no target (a pad target, weight 0), which keeps
    # the sequence length, and so the loss's chunks, whole.
    targets = jnp.concatenate([ids[:, 1:], jnp.full_like(ids[:, :1], self.pad_id)], axis=1)
    weights = (targets != self.pad_id).astype(jnp.float32)
    ce_sum, correct_sum = head_xent(h, kernel, targets, weights)
    n = weights.sum()
    denom = jnp.maximum(n, 1.0)
    return ce_sum / denom, {"accuracy": correct_sum / denom, "predictions": n}


def causal_unigram_loss(counts: np.ndarray, valid: np.ndarray, *, pad_id: int, bos_id: int) -> float:
  """Cross-entropy of the validation next-token targets under the training unigram distribution.

  The targets are every token after the first of a row except padding (text and `</s>`); the
  distribution is the training counts over the same kinds of token, add-one smoothed: the floor a
  trained decoder must beat.
  """
  counts = counts.astype(np.float64).copy()
  counts[[pad_id, bos_id]] = 0
  support = counts.size - 2
  probs = (counts + 1.0) / (counts.sum() + support)
  v = valid[:, 1:].ravel()
  v = v[(v != pad_id) & (v != bos_id)]
  return float(-np.log(probs[v]).mean()) if v.size else float("nan")
