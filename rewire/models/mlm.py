"""The masked-LM train and eval steps, and `Setup`, which builds and jits them over a mesh.

The steps are pure functions of (state, token batch), ready for `jax.jit`.

A train step masks the batch on device with randomness `fold_in(key(seed), step)`, differentiates the loss
with respect to the trainable subtree only (the frozen subtree is closed over, so it gets no weight
gradient), applies the stage optimizer -- forgetting included -- and returns the new state and its metrics.
The state is a plain dict `{"step", "params", "opt_state"}`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn

from rewire.models import flops, heads
from rewire import forgetting, optim, sharding
from rewire.data import masking
from rewire.data.batches import eval_batches
from rewire.errors import UserError
from rewire.models.roberta import ModelConfig, RobertaForMaskedLM

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


def all_finite(tree: Any) -> jax.Array:
  """Whether every value of `tree` is finite (a scalar bool, computed on device)."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_train_step(model, tx: optax.GradientTransformation, trainable: Any, *, seed: int,
                    masker: MaskingSpec, schedules: optim.Schedules, forget_every: int,
                    total_steps: int, forget_until: int = 0, full_gradient: bool = False) -> Callable:
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

    def loss_fn(params):
      logits = model.apply({"params": params}, batch["input_ids"], attention_mask,
                           batch["masked_positions"], deterministic=False, rngs={"dropout": dropout_rng})
      loss, acc, n = mlm_loss(logits, batch["masked_labels"], batch["masked_weights"])
      return loss, (acc, n)

    (loss, (acc, n)), grads = optim.value_and_grad_trainable(loss_fn, state["params"], trainable_for_grad,
                                                             has_aux=True)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optim.apply_trainable(state["params"], updates, trainable)
    grad_norm = optax.tree.norm(grads)
    metrics = {
        "loss": loss, "accuracy": acc, "predictions": n, "grad_norm": grad_norm,
        "forgot": forgetting.reset_due(step, forget_every, total_steps, forget_until),
        "finite": all_finite((loss, grad_norm, params)),  # checked by the loop before any checkpoint
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


def model_config_from(config, vocab_size: int, pad_id: int) -> ModelConfig:
  d = dict(config.model)
  if d["vocab_size"] and d["vocab_size"] != vocab_size:
    raise UserError(f"config.model.vocab_size={d['vocab_size']} but the tokenizer has {vocab_size} entries")
  d["vocab_size"] = vocab_size
  d["max_position_embeddings"] = d["max_position_embeddings"] or config.data.seq_len + 2
  if d["max_position_embeddings"] < config.data.seq_len + 2:
    raise UserError(f"model.max_position_embeddings={d['max_position_embeddings']} is too small for "
                    f"data.seq_len={config.data.seq_len} (needs seq_len + 2)")
  d["pad_token_id"] = pad_id
  return ModelConfig.from_dict(d)


def unigram_loss(counts: np.ndarray, valid: np.ndarray, num_special: int, mask_id: int) -> float:
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


class Setup:
  """Everything static about a run: mesh, model, optimizer, shardings and the jitted steps."""

  def __init__(self, config, mesh, specials, *, full_gradient: bool = False):
    self.config = config
    self.mesh = mesh
    self.rules = sharding.rules_from_config(config.mesh.rules)
    self.model_config = model_config_from(config, specials.vocab_size, specials.pad)
    self.model = RobertaForMaskedLM(self.model_config)
    seq_len = config.data.seq_len
    self.masker = MaskingSpec(mask_id=specials.mask, pad_id=specials.pad, vocab_size=specials.vocab_size,
                              mask_prob=config.data.mask_prob,
                              max_predictions=masking.max_predictions_for(seq_len, config.data.mask_prob))

    def init_boxed(key):
      return heads.init_variables(self.model, key, seq_len)["params"]

    key = jax.random.key(config.seed)
    boxed = jax.eval_shape(init_boxed, key)
    self.param_shardings = sharding.logical_shardings(boxed, mesh, self.rules)
    abstract_params = nn.unbox(boxed)

    labels = optim.label_params(abstract_params, config.optim.rules)
    forget_every = config.forget_every
    if forget_every > 0:
      labels = optim.relabel(abstract_params, labels, config.forget.pattern, optim.FORGET)
    self.labels = labels
    self.trainable = optim.trainable_mask(labels)
    groups = sorted(set(jax.tree.leaves(labels)))
    fcfg = config.forget
    self.schedules = optim.make_schedules(config.optim, config.total_steps, forget_every, groups,
                                          until=fcfg.until)
    final = (optim.adamw(config.optim, self.schedules.final) if self.schedules.final is not None else None)
    reset = functools.partial(forgetting.forget, every=forget_every, last_step=config.total_steps,
                              init_std=fcfg.init_std, pad_id=specials.pad, seed=config.seed, until=fcfg.until,
                              reset_optimizer=fcfg.reset_optimizer, final=final)
    self.tx = optim.make_stage_optimizer(config.optim, labels, self.schedules,
                                         wrap={optim.FORGET: reset} if forget_every > 0 else None)

    def init_state(key):
      params = nn.unbox(init_boxed(key))
      return {"step": jnp.zeros([], jnp.int32), "params": params, "opt_state": self.tx.init(params)}

    self._init_state = init_state
    self.abstract_state = jax.eval_shape(init_state, key)
    repl = sharding.replicated(mesh)
    opt_shardings = sharding.opt_state_shardings(self.tx, boxed, mesh, self.rules)
    self.state_shardings = {"step": repl, "params": self.param_shardings, "opt_state": opt_shardings}
    batch_sh = sharding.batch_sharding(mesh)

    train_step = make_train_step(self.model, self.tx, self.trainable, seed=config.seed, masker=self.masker,
                                 schedules=self.schedules, forget_every=forget_every,
                                 total_steps=config.total_steps, forget_until=fcfg.until,
                                 full_gradient=full_gradient)
    self.train_step = jax.jit(train_step, in_shardings=(self.state_shardings, batch_sh),
                              out_shardings=(self.state_shardings, repl), donate_argnums=(0,))
    eval_step = make_eval_step(self.model, seed=config.seed, masker=self.masker)
    self.eval_step = jax.jit(eval_step, in_shardings=(self.param_shardings, batch_sh, None), out_shardings=repl)

  def init(self, params: Any = None) -> Any:
    """A fresh state: random params, or the given host-side params placed on the mesh."""
    if params is None:
      return jax.jit(self._init_state, out_shardings=self.state_shardings)(jax.random.key(self.config.seed))
    params = jax.device_put(params, self.param_shardings)
    opt_state = jax.jit(self.tx.init, out_shardings=self.state_shardings["opt_state"])(params)
    step = jax.device_put(jnp.zeros([], jnp.int32), self.state_shardings["step"])
    return {"step": step, "params": params, "opt_state": opt_state}

  def abstract_with_shardings(self) -> Any:
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        self.abstract_state, self.state_shardings)


def step_flops_of(setup: Setup) -> float:
  mc, c = setup.model_config, setup.config
  return flops.mlm_step_flops(hidden=mc.hidden_size, layers=mc.num_layers, intermediate=mc.intermediate_size,
                              vocab=mc.vocab_size, batch=c.batch_size, seq_len=c.data.seq_len,
                              predictions=setup.masker.max_predictions)


def evaluate(setup: Setup, params, valid: np.ndarray, batch_size: int, pad_id: int) -> dict[str, float]:
  """Validation MLM loss and accuracy with a fixed masking per batch (comparable across steps and runs)."""
  loss_sum = correct = count = 0.0
  nproc, pid = jax.process_count(), jax.process_index()
  for i, batch in enumerate(eval_batches(valid, batch_size, pad_id)):
    local = batch.shape[0] // nproc
    tokens = sharding.global_batch(batch[pid * local:(pid + 1) * local], setup.mesh)
    l, c, n = jax.device_get(setup.eval_step(params, tokens, np.int32(i)))
    loss_sum, correct, count = loss_sum + float(l), correct + float(c), count + float(n)
  count = max(count, 1.0)
  return {"valid_loss": loss_sum / count, "valid_accuracy": correct / count}
