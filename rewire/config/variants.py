"""The pretraining variants that rewire's comparisons make, and the one recipe that tells them apart.

The pipeline (`rewire.study.pipeline`) and the study (`rewire.study.graph`) pretrain one model per variant
from one base pretraining config. What differs between the variants lives here alone, so the two entry
points cannot drift apart:

  standard      the baseline of every comparison: no resets, no clipping
  forget        resets the token embeddings every `forget_every` updates (with `until` > 0, not after update
                `until`: its last episode runs to the end) and clips the gradient norm at `clip_norm`
  weight_decay  the standard recipe with a larger AdamW weight decay (`weight_decay`): the second route to
                plasticity, after Han et al., "Weight Decay Improves Language Model Plasticity" (2026)
"""

from __future__ import annotations

import copy

from rewire.errors import UserError

VARIANTS = ("standard", "forget", "weight_decay")
BASELINE = "standard"
DEFAULT_VARIANTS = ("standard", "forget")
WEIGHT_DECAY = 0.1  # the weight_decay variant's default: 10x the paper's recipe (0.01), the common LLM value


def check_variants(variants) -> tuple[str, ...]:
  """`variants` as a tuple; a UserError unless each is known and named once, and the baseline is among them
  with at least one variant to compare with it."""
  names = tuple(str(v) for v in variants)
  unknown = [v for v in names if v not in VARIANTS]
  if unknown:
    raise UserError(f"unknown pretraining variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
  if not names or len(set(names)) != len(names):
    raise UserError(f"variants must name each variant once, got {names}")
  if BASELINE not in names or len(names) < 2:
    raise UserError(f"variants must name each variant once, {BASELINE!r} (the baseline) and at least one "
                    f"other, got {names}")
  return names


def compared(variants) -> list[str]:
  """The variants that are compared with the baseline, in their order."""
  return [v for v in variants if v != BASELINE]


def pretrain_config(base_pretrain_cfg, variant: str, *, seed: int, forget_every: int, clip_norm: float,
                    until: int = 0, weight_decay: float = WEIGHT_DECAY):
  """A deep copy of `base_pretrain_cfg` (a pretraining ConfigDict) set up as `variant`, seeded `seed`.

  `forget_every`, `clip_norm` and `until` are the forgetting variant's settings, `weight_decay` the
  weight-decay variant's; every other variant gets no resets and no clipping, whatever they are, and keeps
  the base config's weight decay.
  """
  if variant not in VARIANTS:
    raise UserError(f"unknown pretraining variant {variant!r}; choose from {', '.join(VARIANTS)}")
  c = copy.deepcopy(base_pretrain_cfg)
  c.seed = int(seed)
  forget = variant == "forget"
  c.forget_every = int(forget_every) if forget else 0
  c.optim.clip_norm = float(clip_norm) if forget else 0.0
  c.forget.until = int(until) if forget else 0
  if variant == "weight_decay":
    c.optim.weight_decay = float(weight_decay)
  return c
