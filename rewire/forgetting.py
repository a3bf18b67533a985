"""Active forgetting as an optax transformation.

`forget(inner, ...)` wraps the optimizer of the token-embedding group inside the stage's
`optax.multi_transform` (see `rewire.optim`). After update number s (1-based) it resets that group
whenever s is a multiple of K, s is not the final update and (with `until` = U > 0) s <= U:

* the group's leaves get fresh rows from N(0, init_std) (`fresh_rows`), the padding row of a 2-D leaf 0;
* the group's optimizer state is re-initialised (Adam moments zeroed, its update count restarted), so the
  group replays its own learning-rate schedule inside every K-update episode. With
  `reset_optimizer=False` the Adam moments (and their bias-correction count) are carried over instead;
  only the schedule restarts;
* every other leaf, and its optimizer state, is exactly what it would have been without the reset.

With `until`, the episode after the last reset runs to the end of training ("temporary forgetting"): it
uses `final`, the same AdamW with the schedule compressed into that longer episode instead of into K.

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


def reset_due(count: jax.Array, every: int, last_step: int, until: int = 0) -> jax.Array:
  """True after update `count` (1-based) if a reset follows it: a multiple of `every`, not the last
  update, and not after update `until` (when `until` > 0)."""
  if every <= 0:
    return jnp.zeros_like(count, dtype=bool)
  due = (count % every == 0) & (count < last_step)
  return due & (count <= until) if until > 0 else due


def last_reset(every: int, last_step: int, until: int = 0) -> int:
  """The update after which the final reset happens (0 if there is none)."""
  if every <= 0:
    return 0
  bound = min(last_step - 1, until) if until > 0 else last_step - 1
  return (bound // every) * every


def _keep_moments(new_state: Any, old_state: Any) -> Any:
  """`new_state` with every `ScaleByAdamState` node taken from `old_state` (moments kept, schedule restarted)."""
  is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)
  return jax.tree.map(lambda n, o: o if is_adam(n) else n, new_state, old_state, is_leaf=is_adam)


def fresh_rows(key: jax.Array, shape: tuple[int, ...], std: float, pad_row: int | None = None) -> jax.Array:
  """Fresh vocabulary rows: N(0, std) in float32, with row `pad_row` zeroed when given.

  The one draw behind a forgetting reset, an adaptation's re-initialisation and a probe's new tables
  (`rewire.models.family.Family.pad_row` says which row a family zeroes); each caller derives `key` from
  its own salt, so their random streams stay apart.
  """
  x = std * jax.random.normal(key, shape, jnp.float32)
  return x if pad_row is None else x.at[pad_row].set(0.0)


def fresh_leaves(key: jax.Array, params: Any, *, init_std: float, pad_id: int | None) -> Any:
  """Fresh rows (`fresh_rows`) for every leaf of `params` (the j-th from `fold_in(key, j)`; a 2-D leaf's
  row `pad_id` zeroed)."""
  leaves, treedef = jax.tree.flatten(params)
  out = [fresh_rows(jax.random.fold_in(key, j), p.shape, init_std, pad_id if p.ndim == 2 else None).astype(p.dtype)
         for j, p in enumerate(leaves)]
  return jax.tree.unflatten(treedef, out)


def forget(inner: optax.GradientTransformation, *, every: int, last_step: int, init_std: float,
           pad_id: int | None, seed: int, until: int = 0, reset_optimizer: bool = True,
           final: optax.GradientTransformation | None = None) -> optax.GradientTransformationExtraArgs:
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
    until: U > 0: no reset after update U; 0: reset to the end.
    reset_optimizer: False keeps the group's Adam moments across a reset (the schedule still restarts).
    final: with `until`, the group's optimizer for the episode after the last reset (same state
      structure as `inner`, a schedule over that episode's length); None: `inner` throughout.
  """
  final_from = last_reset(every, last_step, until) if (until > 0 and final is not None) else None

  def init_fn(params):
    return ForgetState(count=jnp.zeros([], jnp.int32), inner_state=inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError("forget() needs `params` in update() to reset the embeddings")
    count = state.count + 1
    if final_from is None:
      updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    else:
      updates, inner_state = jax.lax.cond(
          count > final_from, lambda u, s: final.update(u, s, params, **extra_args),
          lambda u, s: inner.update(u, s, params, **extra_args), updates, state.inner_state)
    if every <= 0:
      return updates, ForgetState(count, inner_state)

    def do_reset(operand):
      upd, old = operand
      key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _SALT), count)
      fresh = fresh_leaves(key, params, init_std=init_std, pad_id=pad_id)
      upd = jax.tree.map(lambda u, f, p: (f - p).astype(u.dtype), upd, fresh, params)
      new = inner.init(fresh)
      return upd, new if reset_optimizer else _keep_moments(new, old)

    updates, inner_state = jax.lax.cond(reset_due(count, every, last_step, until), do_reset, lambda o: o,
                                        (updates, inner_state))
    return updates, ForgetState(count, inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
