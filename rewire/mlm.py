"""The masked-LM train and eval steps: pure functions of (state, token batch), ready for `jax.jit`.

A train step masks the batch on device with randomness `fold_in(key(seed), step)`, differentiates the loss
with respect to the trainable subtree only (the frozen subtree is closed over, so it gets no weight
gradient), applies the stage optimizer -- forgetting included -- and returns the new state and its metrics.
The state is a plain dict `{"step", "params", "opt_state"}`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from rewire import forgetting, optim
from rewire.data import masking

_EVAL_SALT = 0xE7A1


@dataclasses.dataclass(frozen=True)
class MaskingSpec:
  mask_id: int
  pad_id: int
  vocab_size: int
  mask_prob: float
  max_predictions: int
  num_special: int = 4

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


def make_train_step(model, tx: optax.GradientTransformation, trainable: Any, *, seed: int,
                    masker: MaskingSpec, schedules: optim.Schedules, forget_every: int,
                    total_steps: int, full_gradient: bool = False) -> Callable:
  """Builds `train_step(state, tokens) -> (state, metrics)`.

  `full_gradient=True` differentiates every parameter and leaves freezing to the masked optimizer alone;
  it exists for the adaptation benchmark, which measures what differentiating only the trainable
  subtree saves.
  """
  if full_gradient:
    trainable_for_grad = jax.tree.map(lambda _: True, trainable)
  else:
    trainable_for_grad = trainable

  def train_step(state, tokens):
    step = state["step"] + 1  # the number of this update, 1-based
    mask_rng, dropout_rng = jax.random.split(jax.random.fold_in(jax.random.key(seed), step))
    batch = masker(mask_rng, tokens)
    attention_mask = (tokens != masker.pad_id).astype(jnp.int32)
    train_params, frozen_params = optim.split_trainable(state["params"], trainable_for_grad)

    def loss_fn(tp):
      params = optim.merge(tp, frozen_params, trainable_for_grad)
      logits = model.apply({"params": params}, batch["input_ids"], attention_mask,
                           batch["masked_positions"], deterministic=False, rngs={"dropout": dropout_rng})
      loss, acc, n = mlm_loss(logits, batch["masked_labels"], batch["masked_weights"])
      return loss, (acc, n)

    (loss, (acc, n)), grads = jax.value_and_grad(loss_fn, has_aux=True)(train_params)
    full_grads = optim.zeros_for_frozen(grads, state["params"], trainable_for_grad)
    updates, opt_state = tx.update(full_grads, state["opt_state"], state["params"])
    params = optim.apply_trainable(state["params"], updates, trainable)
    metrics = {
        "loss": loss, "accuracy": acc, "predictions": n,
        "grad_norm": optax.tree.norm(grads),
        "forgot": forgetting.reset_due(step, forget_every, total_steps),
    }
    for group, lr in schedules.rates(step, forget_every).items():
      metrics[f"lr_{group}"] = lr
    return {"step": step, "params": params, "opt_state": opt_state}, metrics

  return train_step


def make_eval_step(model, *, seed: int, masker: MaskingSpec) -> Callable:
  """Builds `eval_step(params, tokens, index) -> (loss_sum, correct_sum, count)` with fixed masking per batch."""

  def eval_step(params, tokens, index):
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _EVAL_SALT), index)
    batch = masker(rng, tokens)
    attention_mask = (tokens != masker.pad_id).astype(jnp.int32)
    logits = model.apply({"params": params}, batch["input_ids"], attention_mask, batch["masked_positions"],
                         deterministic=True)
    loss, acc, n = mlm_loss(logits, batch["masked_labels"], batch["masked_weights"])
    return loss * n, acc * n, n

  return eval_step
