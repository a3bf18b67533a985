"""Stage optimizers: a regex label table over parameter paths, turned into `optax.multi_transform`.

A stage says which parameters train and which stay frozen with a table such as

    rules = ((r"roberta/embeddings/word_embeddings/embedding", "train"), (r".*", "frozen"))

Rules are tried in order and the first `re.fullmatch` wins; a parameter that matches no rule stops the
run with an error naming it. Frozen leaves get `optax.set_to_zero()` and therefore carry no optimizer
state. Each trainable group gets AdamW with its own learning-rate schedule, so that (for example) the
embedding group of a forgetting run can replay the schedule inside every K-update episode.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from rewire.errors import UserError
from rewire import forgetting
from rewire.forgetting import last_reset

FROZEN = "frozen"
TRAIN = "train"
FORGET = "forget"  # the trainable group that the forgetting transformation resets


def path_str(path: Sequence[Any]) -> str:
  """`(DictKey('roberta'), DictKey('embeddings'), ...)` -> 'roberta/embeddings/...'."""
  return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


def get_path(tree: Any, path: Sequence[str]) -> Any:
  """The subtree of a nested dict at `path` (e.g. a family's `word_embedding_path()`)."""
  for key in path:
    tree = tree[key]
  return tree


def with_path(tree: dict, path: Sequence[str], value: Any) -> dict:
  """A copy of nested dict `tree` (shallow along `path` only) with the leaf at `path` replaced (or added)."""
  out = dict(tree)
  out[path[0]] = value if len(path) == 1 else with_path(tree.get(path[0], {}), path[1:], value)
  return out


def label_params(params: Any, rules: Sequence[Sequence[str]]) -> Any:
  """Labels every leaf of `params` with the group of the first rule whose regex fully matches its path."""
  compiled = []
  for rule in rules:
    if len(rule) != 2:
      raise UserError(f"optim.rules entry {tuple(rule)!r} is not a (regex, group) pair")
    try:
      compiled.append((re.compile(rule[0]), rule[1]))
    except re.error as e:
      raise UserError(f"optim.rules regex {rule[0]!r} is invalid: {e}") from None

  def label(path, _):
    name = path_str(path)
    for regex, group in compiled:
      if regex.fullmatch(name):
        return group
    raise UserError(f"parameter {name!r} matches no rule in optim.rules; add a rule such as ('.*', 'frozen')")

  return jax.tree_util.tree_map_with_path(label, params)


def relabel(params: Any, labels: Any, pattern: str, new_label: str) -> Any:
  """Moves the trainable leaves whose path fully matches `pattern` into group `new_label`."""
  regex = re.compile(pattern)
  matched = []

  def f(path, _, lab):
    name = path_str(path)
    if regex.fullmatch(name):
      if lab == FROZEN:
        raise UserError(f"forget.pattern matches {name!r}, which optim.rules freezes")
      matched.append(name)
      return new_label
    return lab

  out = jax.tree_util.tree_map_with_path(f, params, labels)
  if not matched:
    raise UserError(f"forget.pattern {pattern!r} matches no parameter")
  return out


def trainable_mask(labels: Any) -> Any:
  return jax.tree.map(lambda lab: lab != FROZEN, labels)


def groups_of(labels: Any) -> list[str]:
  """The sorted group names of a label tree."""
  return sorted(set(jax.tree.leaves(labels)))


def warmup_linear_decay(peak: float, warmup: int, total: int) -> optax.Schedule:
  """Linear warm-up from 0 to `peak` over `warmup` updates, then linear decay to 0 at update `total`."""
  warmup = max(0, min(int(warmup), int(total)))
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup),
       optax.linear_schedule(peak, 0.0, max(1, int(total) - warmup))],
      [warmup])


@dataclasses.dataclass(frozen=True)
class Schedules:
  """The learning-rate schedule of each trainable group, indexed by that group's own update count.

  With temporary forgetting, `final` is the forgetting group's schedule in the episode that follows its
  last reset (after update `final_from`), which runs to the end of training.
  """
  by_group: Mapping[str, optax.Schedule]
  final: optax.Schedule | None = None
  final_from: int = 0

  def rates(self, step: jax.Array, forget_every: int) -> dict[str, jax.Array]:
    """Learning rate each group used for update number `step` (1-based), for logging."""
    out = {}
    for group, sched in self.by_group.items():
      count = step - 1
      if group == FORGET and forget_every > 0:
        out[group] = sched(count % forget_every)
        if self.final is not None:
          out[group] = jnp.where(count >= self.final_from, self.final(count - self.final_from), out[group])
      else:
        out[group] = sched(count)
    return out


def _episode_schedule(optim_cfg, total_steps: int, length: int) -> optax.Schedule:
  # The reference compresses the whole schedule into each episode: warm-up W*L/T updates, then linear
  # decay to 0 at the episode's end.
  warm = round(optim_cfg.warmup_steps * length / total_steps)
  return warmup_linear_decay(optim_cfg.lr, warm, length)


def make_schedules(optim_cfg, total_steps: int, forget_every: int, groups: Sequence[str], *,
                   until: int = 0) -> Schedules:
  """Global schedule for every group; the forgetting group replays it compressed into each episode.

  With `until` > 0 (no resets after update `until`) the episode after the last reset runs to the end of
  training, and the schedule is compressed into that episode's length instead.
  """
  by_group, final, final_from = {}, None, 0
  for g in groups:
    if g == FROZEN:
      continue
    if g == FORGET and forget_every > 0:
      by_group[g] = _episode_schedule(optim_cfg, total_steps, forget_every)
      if until > 0:
        final_from = last_reset(forget_every, total_steps, until)
        final = _episode_schedule(optim_cfg, total_steps, total_steps - final_from)
    else:
      by_group[g] = warmup_linear_decay(optim_cfg.lr, optim_cfg.warmup_steps, total_steps)
  return Schedules(by_group, final, final_from)


def adamw(optim_cfg, schedule: optax.Schedule) -> optax.GradientTransformation:
  """fairseq-style Adam with decoupled weight decay on every parameter of the group."""
  return optax.chain(
      optax.scale_by_adam(b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps),
      optax.add_decayed_weights(optim_cfg.weight_decay),
      optax.scale_by_learning_rate(schedule),
  )


def keep_rows(rows: Mapping[str, tuple[Any, int]]) -> optax.GradientTransformation:
  """Zero updates for chosen rows: `rows[path] = (bool mask, axis)` keeps the masked rows of that leaf (along
  `axis`) exactly as they are, while the rest of the leaf trains (an adaptation's rows copied from the source)."""
  def update(updates, state, params=None):
    def keep(path, u):
      spec = rows.get(path_str(path))
      if spec is None:
        return u
      mask, axis = spec
      shape = [1] * u.ndim
      shape[axis] = -1
      return jnp.where(jnp.asarray(mask).reshape(shape), jnp.zeros_like(u), u)
    return jax.tree_util.tree_map_with_path(keep, updates), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_stage_optimizer(optim_cfg, labels: Any, schedules: Schedules, *,
                         wrap: Mapping[str, Callable[[optax.GradientTransformation], Any]] | None = None,
                         kept_rows: Mapping[str, tuple[Any, int]] | None = None) -> optax.GradientTransformation:
  """Global-norm clipping (optional), then one AdamW per trainable group; frozen groups get zeros.

  `wrap[group]`, if given, wraps that group's AdamW (the forgetting group: `rewire.forgetting.forget`);
  `kept_rows` (`keep_rows`) then holds chosen rows of trainable leaves where they are.
  """
  groups = groups_of(labels)
  transforms: dict[str, optax.GradientTransformation] = {}
  for g in groups:
    transforms[g] = optax.set_to_zero() if g == FROZEN else adamw(optim_cfg, schedules.by_group[g])
    if wrap and g in wrap:
      transforms[g] = wrap[g](transforms[g])
  parts = []
  if optim_cfg.clip_norm and optim_cfg.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(optim_cfg.clip_norm))
  parts.append(optax.multi_transform(transforms, labels))
  if kept_rows:
    parts.append(keep_rows(kept_rows))
  return optax.chain(*parts)


@dataclasses.dataclass(frozen=True)
class StageOptimizer:
  """A stage's optimizer and what its train step and logs read of it."""
  tx: optax.GradientTransformation
  labels: Any                 # the group of every param leaf
  trainable: Any              # bool per leaf: not frozen
  schedules: Schedules
  forget_every: int = 0

  def rates(self, step: jax.Array) -> dict[str, jax.Array]:
    """Each group's learning rate at update `step` (1-based)."""
    return self.schedules.rates(step, self.forget_every)


def stage_optimizer(optim_cfg, family, params: Any, *, total_steps: int, warmup_steps: int | None = None,
                    forget_every: int = 0, forget_cfg=None, seed: int = 0, pad_id: int | None = None,
                    kept_rows: Mapping[str, tuple[Any, int]] | None = None) -> StageOptimizer:
  """The one builder of every stage's optimizer: labels, schedules, AdamW per group, forgetting.

  `optim_cfg` holds the AdamW recipe (lr, warmup_steps, b1, b2, eps, weight_decay) and optionally
  `clip_norm` and `rules` (default: everything trains). `family` (a `rewire.models.family.Family`)
  resolves leaf-set names and says where the padding row is; `params` may be abstract. With
  `forget_every` > 0 the leaves of `forget_cfg.pattern` form the forgetting group, wrapped in
  `rewire.forgetting.forget`. `warmup_steps` overrides the config's (fine-tuning derives it from a fraction).
  `kept_rows` holds chosen rows of vocabulary leaves as they are (`keep_rows`).
  """
  hyper = types.SimpleNamespace(**{"clip_norm": 0.0, "rules": ((".*", TRAIN),), **dict(optim_cfg)})
  if warmup_steps is not None:
    hyper.warmup_steps = warmup_steps
  labels = label_params(params, family.resolve_rules(hyper.rules))
  wrap = None
  until = forget_cfg.until if forget_every > 0 else 0
  if forget_every > 0:
    if forget_cfg.pattern in ("output", "both") and "output" not in family.lm_matrices(params):
      raise UserError(f"forget.pattern={forget_cfg.pattern} resets the output head, but this {family.name} model "
                      f"ties it to the token-embedding matrix; use forget.pattern=input")
    labels = relabel(params, labels, family.resolve(forget_cfg.pattern), FORGET)
  schedules = make_schedules(hyper, total_steps, forget_every, groups_of(labels), until=until)
  if forget_every > 0:
    final = adamw(hyper, schedules.final) if schedules.final is not None else None
    wrap = {FORGET: functools.partial(
        forgetting.forget, every=forget_every, last_step=total_steps, init_std=forget_cfg.init_std,
        pad_id=family.pad_row(family.word_embedding, pad_id), seed=seed, until=until,
        reset_optimizer=forget_cfg.reset_optimizer, final=final)}
  tx = make_stage_optimizer(hyper, labels, schedules, wrap=wrap, kept_rows=kept_rows)
  return StageOptimizer(tx, labels, trainable_mask(labels), schedules, max(forget_every, 0))


def group_state(opt_state: Any, group: str) -> Any:
  """One group's optimizer state (its AdamW chain; under `forget` for the forgetting group) in a stage
  optimizer's state, wherever optax's chain puts it."""
  for part in opt_state:
    if isinstance(part, optax.MultiTransformState):
      inner = part.inner_states[group].inner_state
      return inner.inner_state if isinstance(inner, forgetting.ForgetState) else inner
  raise ValueError("not the state of a stage optimizer (no optax.multi_transform in its chain)")


def value_and_grad_trainable(loss_fn: Callable, params: Any, mask: Any, *, has_aux: bool = False):
  """`jax.value_and_grad(loss_fn)(params)`, differentiated with respect to the trainable leaves only.

  The frozen leaves are closed over, so XLA computes no weight gradient for them; their slots in the
  returned gradient are zeros, which the optimizer's `set_to_zero` discards. With `apply_trainable`
  this is how a train step freezes: by the stage's `mask`, from its label table.
  """
  train, frozen = _split(params, mask)
  out, grads = jax.value_and_grad(lambda tp: loss_fn(_merge(tp, frozen, mask)), has_aux=has_aux)(train)
  return out, jax.tree.map(lambda m, g, p: g if m else jnp.zeros_like(p), mask, grads, params,
                           is_leaf=lambda x: x is None)


def apply_trainable(params: Any, updates: Any, mask: Any) -> Any:
  """`params + updates` on trainable leaves; frozen leaves are passed through untouched (bit-identical)."""
  return jax.tree.map(lambda p, u, m: (p + u).astype(p.dtype) if m else p, params, updates, mask)


def _split(params: Any, mask: Any) -> tuple[Any, Any]:
  """Two trees with `None` in place of the leaves the other one holds; `_merge` puts them back together."""
  train = jax.tree.map(lambda p, m: p if m else None, params, mask)
  frozen = jax.tree.map(lambda p, m: None if m else p, params, mask)
  return train, frozen


def _merge(train: Any, frozen: Any, mask: Any) -> Any:
  return jax.tree.map(lambda m, t, f: t if m else f, mask, train, frozen, is_leaf=lambda x: x is None)
