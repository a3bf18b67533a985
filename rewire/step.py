"""The one train step of every training stage, and the placement of its state on the mesh.

Pretraining, language adaptation and task adaptation differ only in their objective and their masked
optimizer, so they share this step. An objective says how a raw batch becomes model inputs and the
randomness of the loss (`prepare`, outside the gradient: e.g. MLM masking on device) and what the loss and
its metrics are (`loss`). `make_train_step` returns the pure `train_step(state, batch) -> (state,
metrics)`; it

* draws its randomness from `fold_in(key(seed), step)`, so a resumed run repeats the same draws;
* differentiates the trainable subtree only (`optim.value_and_grad_trainable`: frozen leaves get no weight
  gradient) and applies the stage optimizer, forgetting included (it is part of `tx`);
* reports the loss, the objective's metrics, the gradient norm, the stage's event flags, a `finite` flag
  (checked by `rewire.loop` before any checkpoint) and each group's learning rate.

The state is a plain dict `{"step", "params", "opt_state"}`. `state_shardings` derives its shardings from the
params' logical axes, `place_state` puts host params and a fresh optimizer state on the mesh, and
`jit_train_step` compiles the step once with the state donated.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

import jax
import jax.numpy as jnp
import optax

from rewire import optim, sharding


class Objective(Protocol):
  def inputs(self, rng: jax.Array, batch: Any) -> Any:
    """The model inputs of a raw batch (e.g. MLM masking drawn from `rng`); what evaluation scores."""

  def prepare(self, rng: jax.Array, batch: Any) -> tuple[Any, jax.Array]:
    """(model inputs, the loss's randomness) from a raw batch and the step's key; not differentiated."""

  def loss(self, params: Any, inputs: Any, rng: jax.Array, *, deterministic: bool = False
           ) -> tuple[jax.Array, Mapping[str, jax.Array]]:
    """(scalar loss, metrics) of `params` on `inputs` (training mode unless `deterministic`); evaluation
    reads the metrics "accuracy" and "predictions" (the count the loss is a mean over)."""


_EVAL_SALT = 0xE7A1


def make_eval_step(objective: Objective, *, seed: int) -> Callable:
  """Builds `eval_step(params, batch, index) -> (loss_sum, correct_sum, count)`: the objective's inputs
  drawn from a key fixed per batch `index` (comparable across steps and runs), in evaluation mode."""

  def eval_step(params, batch, index):
    rng = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _EVAL_SALT), index)
    loss, aux = objective.loss(params, objective.inputs(rng, batch), None, deterministic=True)
    n = aux["predictions"]
    return loss * n, aux["accuracy"] * n, n

  return eval_step


def all_finite(tree: Any) -> jax.Array:
  """Whether every value of `tree` is finite (a scalar bool, computed on device)."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_train_step(objective: Objective, tx: optax.GradientTransformation, trainable: Any, *, seed: int,
                    rates: Callable[[jax.Array], Mapping[str, jax.Array]],
                    events: Callable[[jax.Array], Mapping[str, jax.Array]] = lambda step: {},
                    differentiate: Any = None) -> Callable:
  """Builds `train_step(state, batch) -> (state, metrics)`.

  `rates(step)` gives each optimizer group's learning rate at update `step` (1-based), `events(step)` the
  stage's event flags (e.g. `forgot`). `differentiate` (default: `trainable`) is the mask of the leaves to
  differentiate; the adaptation benchmark passes all-True to measure what freezing saves.
  """
  grad_mask = trainable if differentiate is None else differentiate

  def train_step(state, batch):
    step = state["step"] + 1  # the number of this update, 1-based
    inputs, rng = objective.prepare(jax.random.fold_in(jax.random.key(seed), step), batch)
    (loss, aux), grads = optim.value_and_grad_trainable(lambda p: objective.loss(p, inputs, rng),
                                                        state["params"], grad_mask, has_aux=True)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optim.apply_trainable(state["params"], updates, trainable)
    grad_norm = optax.tree.norm(grads)
    metrics = {"loss": loss, **aux, "grad_norm": grad_norm, **events(step),
               "finite": all_finite((loss, grad_norm, params))}
    metrics.update({f"lr_{group}": lr for group, lr in rates(step).items()})
    return {"step": step, "params": params, "opt_state": opt_state}, metrics

  return train_step


def state_shardings(tx: optax.GradientTransformation, boxed_params: Any, mesh, rules) -> dict:
  """Shardings of `{"step", "params", "opt_state"}` from the params' logical axes (Adam moments follow them)."""
  return {"step": sharding.replicated(mesh),
          "params": sharding.logical_shardings(boxed_params, mesh, rules),
          "opt_state": sharding.opt_state_shardings(tx, boxed_params, mesh, rules)}


def place_state(params: Any, tx: optax.GradientTransformation, shardings: Mapping[str, Any]) -> dict:
  """A step-0 state on the mesh: host `params` placed, and `tx.init` run there with sharded outputs."""
  params = jax.device_put(params, shardings["params"])
  opt_state = jax.jit(tx.init, out_shardings=shardings["opt_state"])(params)
  step = jax.device_put(jnp.zeros([], jnp.int32), shardings["step"])
  return {"step": step, "params": params, "opt_state": opt_state}


def jit_train_step(train_step: Callable, shardings: Mapping[str, Any], batch_shardings: Any) -> Callable:
  """The step compiled once for the run: state donated, metrics replicated."""
  mesh = shardings["step"].mesh
  return jax.jit(train_step, in_shardings=(shardings, batch_shardings),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=(0,))
