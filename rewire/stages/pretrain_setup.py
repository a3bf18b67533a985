"""What is static about a pretraining or language-adaptation run: model, optimizer, shardings, compiled steps.

`Setup(config, mesh, specials)` builds the family's language model at the tokenizer's size, labels its
params with the stage's rules (the forgetting group is relabelled from `forget.pattern`), builds the
stage optimizer with `rewire.forgetting.forget` wrapped around the forgetting group, derives the state's
shardings abstractly, and compiles the one donated train step (`rewire.step`) and the evaluation step.
Nothing here touches data or devices until `init` places a state.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from rewire import forgetting, optim, sharding, step
from rewire.data import masking
from rewire.data.batches import eval_batches
from rewire.models import registry


class Setup:
  """Everything static about a run: mesh, model, optimizer, shardings and the jitted steps."""

  def __init__(self, config, mesh, specials, *, full_gradient: bool = False, kept_rows=None):
    """`kept_rows`: vocabulary rows that keep their values ({leaf path: (row mask, axis)}, `optim.keep_rows`)."""
    self.config = config
    self.mesh = mesh
    self.rules = sharding.rules_from_config(config.mesh.rules)
    self.model_config = registry.model_config_from(config, specials.vocab_size, specials.pad)
    self.family = fam = registry.family_for(self.model_config)
    self.model = fam.build(fam.lm, self.model_config)
    seq_len = config.data.seq_len
    self.objective = fam.objective(self.model, specials, mask_prob=config.data.mask_prob,
                                   max_predictions=masking.max_predictions_for(seq_len, config.data.mask_prob))
    self.pad_id = specials.pad

    def init_boxed(key):
      return registry.init_variables(self.model, key, seq_len)["params"]

    key = jax.random.key(config.seed)
    boxed = jax.eval_shape(init_boxed, key)
    forget_every, fcfg = config.forget_every, config.forget
    self.optimizer = opt = optim.stage_optimizer(
        config.optim, fam, nn.unbox(boxed), total_steps=config.total_steps, forget_every=forget_every,
        forget_cfg=fcfg, seed=config.seed, pad_id=specials.pad, kept_rows=kept_rows)
    self.tx, self.labels, self.trainable, self.schedules = opt.tx, opt.labels, opt.trainable, opt.schedules

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
        rates=opt.rates,
        events=lambda s: {"forgot": forgetting.reset_due(s, forget_every, total, fcfg.until)},
        differentiate=jax.tree.map(lambda _: True, self.trainable) if full_gradient else None)
    self.train_step = step.jit_train_step(train_step, self.state_shardings, batch_sh)
    self.eval_step = jax.jit(step.make_eval_step(self.objective, seed=config.seed),
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
    c = self.config
    predictions = masking.max_predictions_for(c.data.seq_len, c.data.mask_prob)
    return self.family.step_flops(self.model_config, batch=c.batch_size, seq_len=c.data.seq_len,
                                  predictions=predictions)

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
