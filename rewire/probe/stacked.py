"""Many fresh embedding tables trained at once on one frozen body: the compute of a plasticity probe.

A probe asks how fast a frozen transformer body lets brand-new token embeddings learn a language. Every
(language, token budget, start, seed) is a *table*: a fresh N(0, init_std) embedding matrix (or, for a
start other than `random`, one built from the body's own rows by a `rewire.vocab` recipe, on the host
after the draw) with its own batches, masking and dropout randomness; a decoder with an untied output head gets a fresh head `[H, V]` too (as
language adaptation trains both). All tables of one vocabulary size are stacked (`[T, V, H]`, and
`[T, H, V]` for a head) and trained by one jitted, donated step: `jax.vmap` runs the frozen body once per
table, differentiating only the table (the body is closed over, so it gets no weight gradient), and one AdamW updates the stack,
which is element-wise and therefore the same as T separate optimizers. `tests/test_probe.py` checks that
the stacked run gives the curves of running the tables one by one.

A table is a dict {"input": embedding[, "output": head]}. RoBERTa's LM-head bias is held at zero (the
adaptation recipe re-initialises it to 0 and keeps it frozen), and every other leaf is the body's. The
objective is the family's (masked or next-token LM). Batches are drawn on the host from each table's
token-budget prefix, in a per-table seeded epoch order, so a table's batches do not depend on which other
tables share its run.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rewire import optim, sharding
from rewire.data.masking import max_predictions_for
from rewire.models import registry
from rewire.vocab.start import start_leaf

_INIT_SALT, _DROP_SALT, _EVAL_SALT = 0x9B0E, 0xD209, 0xE7A2


@dataclasses.dataclass(frozen=True)
class Table:
  """One curve of a probe: a language, the token budget its embeddings train on, a seed, and how its rows
  start (`init`: a method of `rewire.vocab`)."""
  language: str
  budget: int
  seed: int
  init: str = "random"

  def key(self) -> jax.Array:
    """The table's randomness: a function of its language, budget and seed, and not of its start, so tables
    that differ only in their start share their draws, batches, masking and dropout."""
    k = jax.random.fold_in(jax.random.key(self.seed), zlib.crc32(self.language.encode()) & 0x7FFFFFFF)
    return jax.random.fold_in(k, self.budget & 0x7FFFFFFF)


@dataclasses.dataclass
class TableData:
  train: np.ndarray   # [N, L] the budget prefix of the language's training sequences
  valid: np.ndarray   # [Nv, L] the language's fixed validation sequences


def with_table(family: registry.Family, body: dict, table: dict) -> dict:
  """The params of `body` with a fresh `table` ({"input": [V, H][, "output": [H, V]]}) and a zero LM bias."""
  params = body
  for name, path in family.lm_matrices(body).items():
    params = optim.with_path(params, tuple(path.split("/")), table[name])
  if family.vocab_bias:
    vocab = table["input"].shape[0]
    params = optim.with_path(params, family.vocab_bias_path(), np.zeros((vocab,), np.float32))
  return params


class HostBatches:
  """Per-table batches: each table walks its own seeded permutation of its records, epoch after epoch."""

  def __init__(self, tables: Sequence[Table], data: Sequence[TableData], batch_size: int):
    for t, d in zip(tables, data):
      if len(d.train) < batch_size:
        raise ValueError(f"{t.language}: {len(d.train)} training sequences, fewer than one batch")
    self.tables, self.data, self.batch_size = list(tables), list(data), batch_size
    self.rngs = [np.random.default_rng([t.seed, zlib.crc32(t.language.encode()), t.budget]) for t in tables]
    self.orders = [np.empty(0, np.int64) for _ in tables]

  def next(self) -> np.ndarray:
    out = []
    for i, d in enumerate(self.data):
      if len(self.orders[i]) < self.batch_size:
        self.orders[i] = np.concatenate([self.orders[i], self.rngs[i].permutation(len(d.train))])
      take, self.orders[i] = self.orders[i][:self.batch_size], self.orders[i][self.batch_size:]
      out.append(d.train[np.sort(take)])
    return np.stack(out).astype(np.int32)


class StackedProbe:
  """The jitted init/step/eval of `num_tables` embedding tables of `vocab_size` rows on one body.

  Compiled once per (number of tables, vocabulary size, shapes); `run` may be called on many bodies (for
  example every `probe_every` updates of a pretraining run) without recompiling.
  """

  def __init__(self, model_config, specials, *, seq_len: int, mask_prob: float, optim_cfg,
               total_steps: int, init_std: float, mesh, num_tables: int):
    self.family = registry.family_for(model_config)
    self.model = registry.make_model(self.family.lm, model_config)
    self.vocab_size, self.num_tables, self.total_steps = model_config.vocab_size, num_tables, total_steps
    self.pad_id, self.init_std = specials.pad, init_std
    self.objective = self.family.objective(self.model, specials, mask_prob=mask_prob,
                                           max_predictions=max_predictions_for(seq_len, mask_prob))
    abstract = registry.abstract_params(self.model)
    self.matrices = self.family.lm_matrices(abstract)  # "input"[, "output"] -> path
    one_table = {name: optim.get_path(abstract, path.split("/")) for name, path in self.matrices.items()}
    self._shapes = {name: x.shape for name, x in one_table.items()}
    self.tx = optim.stage_optimizer(optim_cfg, self.family, one_table, total_steps=total_steps).tx  # all train
    self.mesh = mesh
    repl, stacked = sharding.replicated(mesh), sharding.stacked_batch_sharding(mesh)
    self._stacked, self._repl = stacked, repl
    self._init = jax.jit(self._init_fn, out_shardings=repl)
    self._step = jax.jit(self._step_fn, in_shardings=(repl, repl, stacked, repl),
                         out_shardings=(repl, repl), donate_argnums=(0,))
    self._eval = jax.jit(self._eval_fn, in_shardings=(repl, repl, stacked, repl, None), out_shardings=repl)

  # -- pure functions ------------------------------------------------------------------------------------
  def _init_fn(self, keys):
    def one(k):
      table = {}
      for j, (name, path) in enumerate(self.matrices.items()):
        kj = jax.random.fold_in(k, _INIT_SALT)
        kj = jax.random.fold_in(kj, j) if j else kj  # the input table's key is the same for every family
        table[name] = self.family.fresh_leaf(kj, path, self._shapes[name], std=self.init_std, pad_id=self.pad_id)
      return table
    tables = jax.vmap(one)(keys)
    return {"step": jnp.zeros([], jnp.int32), "tables": tables, "opt_state": self.tx.init(tables)}

  def _params_with(self, body, table):
    return with_table(self.family, body, table)

  def _loss(self, table, body, tokens, rng, deterministic):
    batch, drop_rng = self.objective.prepare(rng, tokens)
    loss, aux = self.objective.loss(self._params_with(body, table), batch, drop_rng, deterministic=deterministic)
    return loss, aux["accuracy"], aux["predictions"]

  def _step_fn(self, state, body, tokens, keys):
    step = state["step"] + 1
    rngs = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, _DROP_SALT), step))(keys)
    loss_fn = lambda table, toks, rng: self._loss(table, body, toks, rng, False)[0]
    losses, grads = jax.vmap(jax.value_and_grad(loss_fn))(state["tables"], tokens, rngs)
    updates, opt_state = self.tx.update(grads, state["opt_state"], state["tables"])
    return {"step": step, "tables": optax.apply_updates(state["tables"], updates), "opt_state": opt_state}, losses

  def _eval_fn(self, tables, body, tokens, keys, index):
    def one(table, toks, k):
      loss, _, n = self._loss(table, body, toks, jax.random.fold_in(jax.random.fold_in(k, _EVAL_SALT), index),
                              True)
      return loss * n, n
    return jax.vmap(one)(tables, tokens, keys)

  # -- driving -------------------------------------------------------------------------------------------
  def evaluate(self, tables, body, valid: np.ndarray, keys, batch_size: int) -> np.ndarray:
    """Validation LM loss per table; `valid` is `[T, Nv, L]` (rows of all pad carry no weight)."""
    sums = np.zeros(self.num_tables)
    counts = np.zeros(self.num_tables)
    for i, start in enumerate(range(0, valid.shape[1], batch_size)):
      chunk = valid[:, start:start + batch_size]
      if chunk.shape[1] < batch_size:
        chunk = np.concatenate([chunk, np.full((self.num_tables, batch_size - chunk.shape[1], chunk.shape[2]),
                                               self.pad_id, chunk.dtype)], axis=1)
      s, n = jax.device_get(self._eval(tables, body, jax.device_put(chunk, self._stacked), keys, np.int32(i)))
      sums, counts = sums + s, counts + n
    return sums / np.maximum(counts, 1.0)

  def started(self, state: dict, body: Any, tables: Sequence[Table], recipes: Sequence, *,
              covariance_scale: float) -> dict:
    """`state` with the tables that have a recipe started by it from the body's own vocabulary matrices."""
    fresh = {name: np.array(x) for name, x in jax.device_get(state["tables"]).items()}
    for name, path in self.matrices.items():
      old = np.asarray(jax.device_get(optim.get_path(body, path.split("/"))))
      for i, (t, recipe) in enumerate(zip(tables, recipes)):
        if recipe is not None:
          fresh[name][i] = start_leaf(recipe, old, fresh[name][i], vocab_axis=self.family.vocab_axis(path),
                                      pad_row=self.family.pad_row(path, self.pad_id), seed=t.seed,
                                      covariance_scale=covariance_scale)
    return {**state, "tables": jax.device_put(fresh, self._repl)}

  def run(self, body: Any, tables: Sequence[Table], data: Sequence[TableData], *, batch_size: int,
          eval_every: int, progress=None, on_update=None, recipes: Sequence | None = None,
          covariance_scale: float = 1.0) -> tuple[list[int], np.ndarray, list[dict]]:
    """Trains the tables on `body`; returns (evaluation steps, losses `[T, points]`, each final table).

    `progress(step, losses)` runs at evaluations, `on_update(train_losses)` after every update. `recipes`
    (one per table, None for `random`) start the tables' rows from the body's."""
    if len(tables) != self.num_tables:
      raise ValueError(f"compiled for {self.num_tables} tables, got {len(tables)}")
    body = jax.device_put(body, self._repl)  # e.g. a pretraining run's fsdp-sharded params, replicated
    keys = jnp.stack([t.key() for t in tables])
    nv = max(len(d.valid) for d in data)
    valid = np.full((len(data), nv, data[0].valid.shape[1]), self.pad_id, np.int32)
    for i, d in enumerate(data):
      valid[i, :len(d.valid)] = d.valid
    state = self._init(keys)
    if recipes is not None and any(r is not None for r in recipes):
      state = self.started(state, body, tables, recipes, covariance_scale=covariance_scale)
    batches = HostBatches(tables, data, batch_size)
    steps, curve = [0], [self.evaluate(state["tables"], body, valid, keys, batch_size)]
    for step in range(1, self.total_steps + 1):
      state, train_losses = self._step(state, body, jax.device_put(batches.next(), self._stacked), keys)
      if on_update is not None:
        on_update(train_losses)
      if step % eval_every == 0 or step == self.total_steps:
        steps.append(step)
        curve.append(self.evaluate(state["tables"], body, valid, keys, batch_size))
        if progress is not None:
          progress(step, curve[-1])
    final = jax.device_get(state["tables"])
    return steps, np.stack(curve, axis=1), [{k: np.asarray(x[i]) for k, x in final.items()}
                                            for i in range(self.num_tables)]
