"""What is static about a pretraining or language-adaptation run: model, optimizer, shardings, compiled steps.

`Setup(config, mesh, specials)` builds the family's language model at the tokenizer's size, labels its
params with the stage's rules (the forgetting group is relabelled from `forget.pattern`), builds the
stage optimizer with `rewire.forgetting.forget` wrapped around the forgetting group, derives the state's
shardings abstractly, and compiles the one donated train step (`rewire.step`) and the evaluation step.
Nothing here touches data or devices until `init` places a state.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from rewire import forgetting, optim, sharding, step
from rewire.data import masking
from rewire.data.batches import eval_batches
from rewire.models import flops, registry
from rewire.errors import UserError
from rewire.models.mlm import make_eval_step


class Setup:
  """Everything static about a run: mesh, model, optimizer, shardings and the jitted steps."""

  def __init__(self, config, mesh, specials, *, full_gradient: bool = False):
    self.config = config
    self.mesh = mesh
    self.rules = sharding.rules_from_config(config.mesh.rules)
    self.model_config = registry.model_config_from(config, specials.vocab_size, specials.pad)
    self.family = registry.family_for(self.model_config)
    self.model = registry.make_model(self.family.lm, self.model_config)
    seq_len = config.data.seq_len
    self.objective = registry.lm_objective(self.model, specials, mask_prob=config.data.mask_prob,
                                           max_predictions=masking.max_predictions_for(seq_len, config.data.mask_prob))
    self.pad_id = specials.pad

    def init_boxed(key):
      return registry.init_variables(self.model, key, seq_len)["params"]

    key = jax.random.key(config.seed)
    boxed = jax.eval_shape(init_boxed, key)
    abstract_params = nn.unbox(boxed)

    fam = self.family
    labels = optim.label_params(abstract_params, fam.resolve_rules(config.optim.rules))
    forget_every, fcfg = config.forget_every, config.forget
    if forget_every > 0:
      if fcfg.pattern in ("output", "both") and "output" not in fam.lm_matrices(abstract_params):
        raise UserError(f"forget.pattern={fcfg.pattern} resets the output head, but model.tie_word_embeddings "
                        f"makes it the token-embedding matrix; use forget.pattern=input")
      labels = optim.relabel(abstract_params, labels, fam.resolve(fcfg.pattern), optim.FORGET)
    self.labels = labels
    self.trainable = optim.trainable_mask(labels)
    groups = sorted(set(jax.tree.leaves(labels)))
    self.schedules = optim.make_schedules(config.optim, config.total_steps, forget_every, groups,
                                          until=fcfg.until)
    final = (optim.adamw(config.optim, self.schedules.final) if self.schedules.final is not None else None)
    reset = functools.partial(forgetting.forget, every=forget_every, last_step=config.total_steps,
                              init_std=fcfg.init_std,
                              pad_id=specials.pad if fam.zero_pad_row else None, seed=config.seed, until=fcfg.until,
                              reset_optimizer=fcfg.reset_optimizer, final=final)
    self.tx = optim.make_stage_optimizer(config.optim, labels, self.schedules,
                                         wrap={optim.FORGET: reset} if forget_every > 0 else None)

    def init_state(key):
      params = nn.unbox(init_boxed(key))
      return {"step": jnp.zeros([], jnp.int32), "params": params, "opt_state": self.tx.init(params)}

    self._init_state = init_state
    self.abstract_state = jax.eval_shape(init_state, key)
    self.state_shardings = step.state_shardings(self.tx, boxed, mesh, self.rules)
    self.param_shardings = self.state_shardings["params"]
    batch_sh = sharding.batch_sharding(mesh)

    total = config.total_steps
    train_step = step.make_train_step(
        self.objective, self.tx, self.trainable, seed=config.seed,
        rates=lambda s: self.schedules.rates(s, forget_every),
        events=lambda s: {"forgot": forgetting.reset_due(s, forget_every, total, fcfg.until)},
        differentiate=jax.tree.map(lambda _: True, self.trainable) if full_gradient else None)
    self.train_step = step.jit_train_step(train_step, self.state_shardings, batch_sh)
    self.eval_step = jax.jit(make_eval_step(self.objective, seed=config.seed),
                             in_shardings=(self.param_shardings, batch_sh, None),
                             out_shardings=sharding.replicated(mesh))

  def init(self, params: Any = None) -> Any:
    """A fresh state: random params, or the given host-side params placed on the mesh."""
    if params is None:
      return jax.jit(self._init_state, out_shardings=self.state_shardings)(jax.random.key(self.config.seed))
    return step.place_state(params, self.tx, self.state_shardings)

  def abstract_with_shardings(self) -> Any:
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        self.abstract_state, self.state_shardings)

  def step_flops(self) -> float:
    mc, c = self.model_config, self.config
    predictions = getattr(self.objective, "masker", None)
    return flops.lm_step_flops(self.family.objective, hidden=mc.hidden_size, layers=mc.num_layers,
                               intermediate=mc.intermediate_size, vocab=mc.vocab_size, batch=c.batch_size,
                               seq_len=c.data.seq_len,
                               predictions=predictions.max_predictions if predictions else c.data.seq_len,
                               kv_fraction=getattr(mc, "kv_heads", mc.num_heads) / mc.num_heads)

  def evaluate(self, params, valid: np.ndarray, batch_size: int) -> dict[str, float]:
    """Validation LM loss and accuracy (MLM: with a fixed masking per batch, comparable across steps and runs)."""
    loss_sum = correct = count = 0.0
    nproc, pid = jax.process_count(), jax.process_index()
    for i, batch in enumerate(eval_batches(valid, batch_size, self.pad_id)):
      local = batch.shape[0] // nproc
      tokens = sharding.global_batch(batch[pid * local:(pid + 1) * local], self.mesh)
      l, c, n = jax.device_get(self.eval_step(params, tokens, np.int32(i)))
      loss_sum, correct, count = loss_sum + float(l), correct + float(c), count + float(n)
    count = max(count, 1.0)
    return {"valid_loss": loss_sum / count, "valid_accuracy": correct / count}
