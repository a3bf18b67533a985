"""The two pretraining variants every comparison in rewire makes, and the one recipe that tells them apart.

The pipeline (`rewire.study.pipeline`) and the study (`rewire.study.graph`) both pretrain a standard and a
forgetting model from one base pretraining config. What differs between the two lives here alone, so the
two entry points cannot drift apart: the forgetting variant resets the token embeddings every
`forget_every` updates (with `until` > 0, not after update `until`: its last episode runs to the end) and
clips the gradient norm at `clip_norm`; the standard one does neither.
"""

from __future__ import annotations

import copy

from rewire.errors import UserError

VARIANTS = ("standard", "forget")


def pretrain_config(base_pretrain_cfg, variant: str, *, seed: int, forget_every: int, clip_norm: float,
                    until: int = 0):
  """A deep copy of `base_pretrain_cfg` (a pretraining ConfigDict) set up as `variant`, seeded `seed`.

  `forget_every`, `clip_norm` and `until` are the forgetting variant's settings; the standard variant gets
  0 for all three (no resets, no clipping), whatever they are.
  """
  if variant not in VARIANTS:
    raise UserError(f"unknown pretraining variant {variant!r}; choose from {VARIANTS}")
  c = copy.deepcopy(base_pretrain_cfg)
  c.seed = int(seed)
  forget = variant == "forget"
  c.forget_every = int(forget_every) if forget else 0
  c.optim.clip_norm = float(clip_norm) if forget else 0.0
  c.forget.until = int(until) if forget else 0
  return c
