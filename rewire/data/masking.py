"""BERT/RoBERTa masked-LM corruption, on device: pure `jax.numpy`, jit-able, fixed output shapes.

Masking runs inside the jitted train step, so the host only ships token ids and the corruption is a
deterministic function of `(rng, tokens)` with `rng = fold_in(key(seed), step)`: a resumed run masks
exactly as an uninterrupted one. Per sequence, `k = floor(mask_prob * n + u)` of its `n` eligible
(non-special) tokens are chosen, with `u ~ U[0, 1)`, so the expected count is exactly `mask_prob * n`
(random rounding, unlike fairseq's per-batch rounding). They are drawn uniformly without replacement by
taking the top-k of random scores, and then corrupted 80/10/10: `<mask>`, a random ordinary token,
unchanged. The model's LM head only runs at the `max_predictions` gathered positions.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def max_predictions_for(seq_len: int, mask_prob: float = 0.15) -> int:
  """The smallest-safe number of prediction slots: `mask_tokens` never drops a selected position.

  A sequence has at most `n <= seq_len` eligible tokens and selects `floor(mask_prob*n + u) <=
  floor(mask_prob*seq_len) + 1` of them (the +1 also absorbs float32 rounding on device). Packed
  sequences have at most `seq_len - 2` eligible tokens; the bound is for any input.
  """
  if not 0.0 <= mask_prob <= 1.0:
    raise ValueError(f"mask_prob must be in [0, 1], got {mask_prob}")
  return max(1, min(seq_len, math.floor(mask_prob * seq_len + 1e-6) + 1))


def mask_tokens(rng: jax.Array, tokens: jax.Array, *, mask_id: int, vocab_size: int,
                num_special: int = 4, mask_prob: float = 0.15,
                max_predictions: int) -> dict[str, jax.Array]:
  """Corrupts `tokens` (int32[B, L]) for masked-LM training.

  Args:
    rng: a PRNG key; the result is a deterministic function of (rng, tokens).
    tokens: int32[B, L] token ids. Ids below `num_special` (<s> <pad> </s> <unk>) and `mask_id` are
      never selected; rows that are all padding yield no prediction.
    mask_id: the id of `<mask>`.
    vocab_size: the vocabulary size; random replacements are drawn from the ordinary ids
      `[num_special, vocab_size)` minus `mask_id`.
    num_special: the number of leading special ids.
    mask_prob: the expected fraction of eligible tokens selected.
    max_predictions: M, the number of prediction slots (see `max_predictions_for`).

  Returns:
    input_ids int32[B, L] (corrupted tokens), masked_positions int32[B, M] (unused slots: 0),
    masked_labels int32[B, M] (original ids; unused slots: 0), masked_weights float32[B, M] (1 for real
    predictions, 0 for unused slots).
  """
  batch, length = tokens.shape
  if not 0 < max_predictions <= length:
    raise ValueError(f"max_predictions must be in 1..{length}, got {max_predictions}")
  if not num_special <= mask_id < vocab_size or vocab_size - num_special < 2:
    raise ValueError(f"need num_special <= mask_id < vocab_size and an ordinary id; got "
                     f"num_special={num_special}, mask_id={mask_id}, vocab_size={vocab_size}")
  tokens = tokens.astype(jnp.int32)
  k_round, k_select, k_action, k_random = jax.random.split(rng, 4)

  eligible = (tokens >= num_special) & (tokens != mask_id)
  num_eligible = eligible.sum(axis=-1)
  u = jax.random.uniform(k_round, (batch,), jnp.float32)
  num_selected = jnp.floor(mask_prob * num_eligible.astype(jnp.float32) + u).astype(jnp.int32)
  num_selected = jnp.minimum(jnp.minimum(num_selected, num_eligible), max_predictions)

  # Uniform selection without replacement: the eligible positions with the highest random scores.
  scores = jnp.where(eligible, jax.random.uniform(k_select, (batch, length), jnp.float32), -1.0)
  _, top = jax.lax.top_k(scores, max_predictions)  # int32[B, M], distinct positions per row.
  used = jnp.arange(max_predictions)[None, :] < num_selected[:, None]
  originals = jnp.take_along_axis(tokens, top, axis=-1)

  action = jax.random.uniform(k_action, (batch, max_predictions), jnp.float32)
  random_ids = jax.random.randint(k_random, (batch, max_predictions), num_special, vocab_size - 1,
                                  jnp.int32)
  random_ids = random_ids + (random_ids >= mask_id)  # Skip over <mask>: ordinary ids only.
  replaced = jnp.where(action < 0.8, mask_id, jnp.where(action < 0.9, random_ids, originals))
  replaced = jnp.where(used, replaced, originals)  # Unused slots write back what was there.
  input_ids = jax.vmap(lambda row, pos, val: row.at[pos].set(val, unique_indices=True))(
      tokens, top, replaced)

  return {
      "input_ids": input_ids,
      "masked_positions": jnp.where(used, top, 0).astype(jnp.int32),
      "masked_labels": jnp.where(used, originals, 0).astype(jnp.int32),
      "masked_weights": used.astype(jnp.float32),
  }
