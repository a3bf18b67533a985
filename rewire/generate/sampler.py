"""The cached sampler: a prompt's prefill and every new token in one jitted call, one compile per bucket.

`Sampler(model, params)` pads each prompt on the right to a power-of-two bucket, runs it through the decoder
once with an empty key/value cache (`LlamaForCausalLM.decode`, index 0), then generates inside a
`lax.while_loop`: pick the next token from the last logits, write it into the cache at its position, stop
when every row has produced `</s>` or `max_new_tokens`. Pads after the prompt are never read: a query at
position p sees cache positions <= p, and the decode step overwrites position p before it is read.
Temperature and top-p are traced values (changing them does not recompile); the prompt bucket, the batch
and `max_new_tokens` are static. Randomness: the key of new token i is `fold_in(key(seed), i)`.

`sample_uncached` is the same procedure without a cache (a full forward pass over the sequence so far for
every token): the reference the cached sampler is tested against.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rewire.errors import UserError
from rewire.models.llama import init_cache

MIN_BUCKET = 16


def bucket(length: int, limit: int) -> int:
  """The smallest power of two >= `length` (at least MIN_BUCKET), capped at `limit`."""
  b = MIN_BUCKET
  while b < length:
    b *= 2
  return min(b, limit)


def pick(logits: jax.Array, key: jax.Array, temperature: jax.Array, top_p: jax.Array) -> jax.Array:
  """Next tokens [B] from logits [B, V]: argmax at temperature 0, else a top-p sample at that temperature.

  A `lax.cond` on the (traced) temperature: greedy decoding never pays for the vocabulary sort of top-p.
  """
  logits = logits.astype(jnp.float32)

  def sampled(logits):
    scaled = logits / jnp.maximum(temperature, 1e-6)
    order = jnp.argsort(-scaled, axis=-1)
    sorted_logits = jnp.take_along_axis(scaled, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # probability mass ranked above each token
    keep = before < top_p                        # the smallest set whose mass reaches top_p (always >= 1 token)
    choice = jax.random.categorical(key, jnp.where(keep, sorted_logits, -jnp.inf), axis=-1)
    return jnp.take_along_axis(order, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)

  greedy = lambda logits: jnp.argmax(logits, axis=-1).astype(jnp.int32)
  return jax.lax.cond(temperature > 0, sampled, greedy, logits)


def _check_lengths(model, prompt_len: int, max_new_tokens: int) -> None:
  limit = model.config.max_position_embeddings
  if prompt_len < 1:
    raise UserError("the prompt encodes to no tokens")
  if prompt_len + max_new_tokens > limit:
    raise UserError(f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                    f"{limit} positions; lower max_new_tokens or shorten the prompt")


class Sampler:
  """Jitted cached sampling from a causal LM (`LlamaForCausalLM`) with fixed params."""

  def __init__(self, model, params):
    self.model, self.params = model, params
    self._compiled = {}

  def _fn(self, max_new_tokens: int):
    if max_new_tokens not in self._compiled:
      self._compiled[max_new_tokens] = jax.jit(functools.partial(self._generate, max_new_tokens=max_new_tokens))
    return self._compiled[max_new_tokens]

  def _generate(self, params, prompt, length, seed, temperature, top_p, eos_id, *, max_new_tokens: int):
    model = self.model
    b, p = prompt.shape
    cache = init_cache(model.config, b, p + max_new_tokens)
    logits, cache = model.apply({"params": params}, prompt, cache, jnp.int32(0), method=model.decode)
    last = jax.lax.dynamic_index_in_dim(logits, length - 1, axis=1, keepdims=False)  # [B, V]
    out = jnp.full((b, max_new_tokens), -1, jnp.int32)
    key = jax.random.key(seed)

    def cond(carry):
      i, _, _, _, done = carry
      return (i < max_new_tokens) & ~jnp.all(done)

    def body(carry):
      i, cache, last, out, done = carry
      tok = pick(last, jax.random.fold_in(key, i), temperature, top_p)
      tok = jnp.where(done, -1, tok)
      out = out.at[:, i].set(tok)
      done = done | (tok == eos_id)
      logits, cache = model.apply({"params": params}, jnp.maximum(tok, 0)[:, None], cache, length + i,
                                  method=model.decode)
      return i + 1, cache, logits[:, 0], out, done

    init = (jnp.int32(0), cache, last, out, jnp.zeros((b,), bool))
    return jax.lax.while_loop(cond, body, init)[3]

  def sample(self, prompt: Sequence[int], *, num_samples: int = 1, max_new_tokens: int = 64,
             temperature: float = 0.0, top_p: float = 1.0, seed: int = 0, eos_id: int = -1) -> list[list[int]]:
    """`num_samples` continuations of one prompt (token ids), each cut at `eos_id` (kept) or at the limit."""
    return self.sample_batch([prompt] * num_samples, max_new_tokens=max_new_tokens, temperature=temperature,
                             top_p=top_p, seed=seed, eos_id=eos_id)

  def sample_batch(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int = 64, temperature: float = 0.0,
                   top_p: float = 1.0, seed: int = 0, eos_id: int = -1) -> list[list[int]]:
    """One continuation of each prompt, all prompts of one length, in one batch."""
    n = len(prompts[0])
    if any(len(p) != n for p in prompts):
      raise UserError("sample_batch needs prompts of one length (sample them one by one otherwise)")
    _check_lengths(self.model, n, max_new_tokens)
    p = bucket(n, self.model.config.max_position_embeddings - max_new_tokens)
    padded = np.zeros((len(prompts), p), np.int32)
    padded[:, :n] = np.asarray(prompts, np.int32)
    out = self._fn(max_new_tokens)(self.params, padded, np.int32(n), np.uint32(seed), np.float32(temperature),
                                   np.float32(top_p), np.int32(eos_id))
    return [[int(t) for t in row if t >= 0] for row in np.asarray(jax.device_get(out))]

  def compiles(self) -> int:
    """How many programs the sampler has compiled (one per prompt bucket and max_new_tokens)."""
    return sum(f._cache_size() for f in self._compiled.values())


def sample_uncached(model, params, prompt: Sequence[int], *, num_samples: int = 1, max_new_tokens: int = 64,
                    temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                    eos_id: int = -1) -> list[list[int]]:
  """The same sampling as `Sampler.sample`, recomputing the whole sequence for every token (no cache)."""
  n = len(prompt)
  _check_lengths(model, n, max_new_tokens)
  total = n + max_new_tokens

  @jax.jit
  def run(params, seq, key, temperature, top_p):
    def body(i, carry):
      seq, out, done = carry
      logits = model.apply({"params": params}, seq, deterministic=True)
      last = jax.lax.dynamic_index_in_dim(logits, n + i - 1, axis=1, keepdims=False)
      tok = jnp.where(done, -1, pick(last, jax.random.fold_in(key, i), temperature, top_p))
      seq = jax.lax.dynamic_update_slice(seq, jnp.maximum(tok, 0)[:, None], (0, n + i))
      return seq, out.at[:, i].set(tok), done | (tok == eos_id)
    b = seq.shape[0]
    init = (seq, jnp.full((b, max_new_tokens), -1, jnp.int32), jnp.zeros((b,), bool))
    return jax.lax.fori_loop(0, max_new_tokens, body, init)[1]

  seq = np.zeros((num_samples, total), np.int32)
  seq[:, :n] = np.asarray(prompt, np.int32)
  out = np.asarray(run(params, seq, jax.random.key(np.uint32(seed)), np.float32(temperature), np.float32(top_p)))
  return [[int(t) for t in row if t >= 0] for row in out]
