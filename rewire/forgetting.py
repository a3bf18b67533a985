"""Active forgetting as an optax transformation.

`forget(inner, ...)` wraps the optimizer of the token-embedding group inside the stage's
`optax.multi_transform` (see `rewire.optim`). After update number s (1-based) it resets that group
whenever s is a multiple of K and s is not the final update:

* the group's leaves are resampled from N(0, init_std), with the padding row of a 2-D embedding set to 0;
* the group's optimizer state is re-initialised (Adam moments zeroed, its update count restarted), so the
  group replays its own learning-rate schedule inside every K-update episode;
* every other leaf, and its optimizer state, is exactly what it would have been without the reset.

The reset is a `lax.cond` inside the update, so the train step compiles once and never branches in Python
on the step number. Its randomness is `fold_in(fold_in(key(seed), SALT), s)`, so a resumed run resets
identically. The returned updates are applied with an ordinary `params + updates`; for reset leaves they
are `fresh - params`, which lands on the fresh sample up to one float rounding (the padding row exactly 0).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

_SALT = 0x5EED_F0  # separates forgetting randomness from masking/dropout randomness


class ForgetState(NamedTuple):
  count: jax.Array          # updates applied so far (int32 scalar)
  inner_state: optax.OptState


def reset_due(count: jax.Array, every: int, last_step: int) -> jax.Array:
  """True after update `count` (1-based) if a reset follows it: a multiple of `every`, not the last one."""
  if every <= 0:
    return jnp.zeros_like(count, dtype=bool)
  return (count % every == 0) & (count < last_step)


def resample(key: jax.Array, params: Any, *, init_std: float, pad_id: int | None) -> Any:
  """Fresh N(0, init_std) values for every leaf of `params` (the j-th leaf from `fold_in(key, j)`)."""
  leaves, treedef = jax.tree.flatten(params)
  out = []
  for j, p in enumerate(leaves):
    x = init_std * jax.random.normal(jax.random.fold_in(key, j), p.shape, jnp.float32)
    if pad_id is not None and x.ndim == 2:
      x = x.at[pad_id].set(0.0)
    out.append(x.astype(p.dtype))
  return jax.tree.unflatten(treedef, out)


def forget(inner: optax.GradientTransformation, *, every: int, last_step: int, init_std: float,
           pad_id: int | None, seed: int) -> optax.GradientTransformationExtraArgs:
  """Wraps the optimizer of the leaves to forget (the token embeddings) with periodic resets.

  Used as the forgetting group's transformation inside `optax.multi_transform` (see
  `rewire.optim.make_stage_optimizer`), so it sees only its own leaves, and a reset re-initialises its
  whole state: the group's Adam moments are zeroed and its update count restarts, while the global step,
  the other groups and their states go on.

  Args:
    inner: the group's optimizer (AdamW with the group's per-episode schedule).
    every: K; 0 disables forgetting (the wrapper then only counts updates).
    last_step: the run's final update number; no reset ever follows it.
    init_std: standard deviation of the fresh embeddings.
    pad_id: the row of a 2-D embedding to set to zero after a reset (None for no such row).
    seed: the run's seed; the reset after update s uses `fold_in(fold_in(key(seed), SALT), s)`.
  """

  def init_fn(params):
    return ForgetState(count=jnp.zeros([], jnp.int32), inner_state=inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError("forget() needs `params` in update() to resample the embeddings")
    count = state.count + 1
    updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    if every <= 0:
      return updates, ForgetState(count, inner_state)

    def do_reset(operand):
      upd, _ = operand
      key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _SALT), count)
      fresh = resample(key, params, init_std=init_std, pad_id=pad_id)
      upd = jax.tree.map(lambda u, f, p: (f - p).astype(u.dtype), upd, fresh, params)
      return upd, inner.init(fresh)

    updates, inner_state = jax.lax.cond(reset_due(count, every, last_step), do_reset, lambda o: o,
                                        (updates, inner_state))
    return updates, ForgetState(count, inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
