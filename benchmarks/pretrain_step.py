"""Pretraining-step throughput: rewire vs Hugging Face's `run_mlm_flax` recipe, side by side in one run.

Both sides train the same network (4 layers, hidden 256, 4 heads, FFN 1024, vocab 8192, fp32, dropout 0.1
on hidden states and attention probabilities) on the same batch shape (32 x 128) with the same optimizer
(AdamW b1=0.9, b2=0.98, eps=1e-6, wd=0.01 off biases and LayerNorm scales), on whatever JAX backend is
active (the reference figures are for a 2-core CPU).

(a) rewire: `rewire.stages.pretrain_setup.Setup(...).train_step`, the real step of a forgetting run: raw token ids go
    in; 15% masking (80/10/10) happens on device with a fixed number of gathered positions per sequence;
    the MLM head runs only at those positions; clipping, the forgetting wrapper (whose reset is a
    `lax.cond` in the step) and AdamW; one `jax.jit` with the state donated.
(b) HF: `FlaxRobertaForMaskedLM` + optax as `examples/flax/language-modeling/run_mlm_flax.py` does it:
    host numpy masking (`FlaxDataCollatorForLanguageModeling.mask_tokens`), logits at every position,
    one-hot softmax cross-entropy weighted by `labels > 0`, `jax.jit` (the example pmaps over 1 device)
    with the state donated.

What is timed: wall time of N consecutive steps ending in `block_until_ready`, after one untimed
repetition (compile + warm-up), in R rounds whose order alternates between the sides; medians are
reported. For HF there are two figures: "hf_step" (pre-masked batches: host masking is not timed) and
"hf_loop" (each batch masked on the host inside the timed loop, as the example's loop does; JAX's async
dispatch overlaps it with the previous step). The headline ratio is against "hf_step".

Run: `python benchmarks/pretrain_step.py [--steps N] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import traverse_util  # noqa: E402

from rewire.models import roberta as rewire_model  # noqa: E402

VOCAB, HIDDEN, LAYERS, HEADS, FFN = 8192, 256, 4, 4, 1024
BATCH, SEQ = 32, 128
MLM_PROB = 0.15
BOS, PAD, EOS = 0, 1, 2
MASK_ID = VOCAB - 1  # RoBERTa puts <mask> last
NUM_SPECIAL = 4  # <s> <pad> </s> <unk>


def model_config() -> rewire_model.RobertaConfig:
  return rewire_model.RobertaConfig(
      vocab_size=VOCAB, hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS, intermediate_size=FFN,
      max_position_embeddings=SEQ + 2, type_vocab_size=1, dropout=0.1, attention_dropout=0.1)


def decay_mask_fn(params: Any) -> Any:
  """run_mlm_flax's weight-decay mask: no decay on biases and LayerNorm scales."""
  flat = traverse_util.flatten_dict(params)
  mask = {p: (p[-1] != "bias" and p[-2:] not in (("LayerNorm", "scale"), ("layer_norm", "scale")))
          for p in flat}
  return traverse_util.unflatten_dict(mask)


def make_optimizer() -> optax.GradientTransformation:
  return optax.adamw(1e-4, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01, mask=decay_mask_fn)


def make_tokens(rng: np.random.Generator) -> np.ndarray:
  """A packed batch: <s> w ... w </s>, full length, as run_mlm_flax's group_texts produces."""
  tokens = rng.integers(NUM_SPECIAL, MASK_ID, size=(BATCH, SEQ), dtype=np.int32)
  tokens[:, 0], tokens[:, -1] = BOS, EOS
  return tokens


# ----------------------------------------------------------------------------------------------------------
# (a) rewire


def make_rewire_step(cfg: rewire_model.RobertaConfig) -> tuple[Any, Callable]:
  """rewire's real train step (`rewire.stages.pretrain_setup.Setup`): the forgetting preset's optimizer (clip 0.5, K=1000,
  the reset `lax.cond` inside the step), on-device masking, the head at the gathered masked positions.

  Returns (initial state, step(state, tokens) -> (state, metrics)); the step is jitted with donation.
  """
  from rewire.config import pretrain_preset
  from rewire.data.tokenizer import SpecialIds
  from rewire.sharding import make_mesh
  from rewire.stages.pretrain_setup import Setup
  c = pretrain_preset("base", forgetting=True)
  c.update(total_steps=100_000, batch_size=BATCH)
  c.model.update(hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                 intermediate_size=cfg.intermediate_size, dropout=cfg.dropout,
                 attention_dropout=cfg.attention_dropout)
  c.data.update(seq_len=SEQ, vocab_size=VOCAB)
  c.optim.update(lr=1e-4, warmup_steps=0)
  mesh = make_mesh(c.mesh, jax.devices()[:1])
  setup = Setup(c, mesh, SpecialIds(bos=BOS, pad=PAD, eos=EOS, unk=3, mask=MASK_ID, vocab_size=VOCAB))
  return setup.init(), setup.train_step


# ----------------------------------------------------------------------------------------------------------
# (b) Hugging Face run_mlm_flax


def hf_mask_tokens(inputs: np.ndarray, special_tokens_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """`FlaxDataCollatorForLanguageModeling.mask_tokens` from run_mlm_flax.py, verbatim in numpy."""
  labels = inputs.copy()
  probability_matrix = np.full(labels.shape, MLM_PROB)
  special_tokens_mask = special_tokens_mask.astype("bool")
  probability_matrix[special_tokens_mask] = 0.0
  masked_indices = np.random.binomial(1, probability_matrix).astype("bool")
  labels[~masked_indices] = -100
  indices_replaced = np.random.binomial(1, np.full(labels.shape, 0.8)).astype("bool") & masked_indices
  inputs[indices_replaced] = MASK_ID
  indices_random = np.random.binomial(1, np.full(labels.shape, 0.5)).astype("bool")
  indices_random &= masked_indices & ~indices_replaced
  random_words = np.random.randint(VOCAB, size=labels.shape, dtype="i4")
  inputs[indices_random] = random_words[indices_random]
  return inputs, labels


def hf_collate(tokens: np.ndarray) -> dict[str, np.ndarray]:
  inputs, labels = hf_mask_tokens(tokens.copy(), tokens < NUM_SPECIAL)
  return {"input_ids": inputs, "attention_mask": (tokens != PAD).astype(np.int32), "labels": labels}


def make_hf_step(cfg: rewire_model.RobertaConfig, tx: optax.GradientTransformation):
  """run_mlm_flax's TrainState and train_step, jitted (psum/pmean over one device dropped)."""
  from flax.training import train_state
  from transformers import FlaxRobertaForMaskedLM, RobertaConfig

  model = FlaxRobertaForMaskedLM(RobertaConfig(**cfg.to_hf_dict()), seed=0)
  state = train_state.TrainState.create(apply_fn=model.__call__, params=model.params, tx=tx)

  def train_step(state, batch, dropout_rng):
    dropout_rng, new_dropout_rng = jax.random.split(dropout_rng)

    def loss_fn(params):
      labels = batch.pop("labels")
      logits = state.apply_fn(**batch, params=params, dropout_rng=dropout_rng, train=True)[0]
      label_mask = jnp.where(labels > 0, 1.0, 0.0)
      onehot = jax.nn.one_hot(labels, logits.shape[-1])
      loss = optax.softmax_cross_entropy(logits, onehot) * label_mask
      return loss.sum() / label_mask.sum()

    loss, grad = jax.value_and_grad(loss_fn)(state.params)
    new_state = state.apply_gradients(grads=grad)
    return new_state, {"loss": loss}, new_dropout_rng

  return state, jax.jit(train_step, donate_argnums=(0,))


# ----------------------------------------------------------------------------------------------------------
# Timing


def main(argv: list[str] | None = None) -> dict[str, float]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=3, help="steps per timed repetition")
  parser.add_argument("--rounds", type=int, default=4, help="alternating repetitions per side")
  args = parser.parse_args(argv)

  cfg = model_config()
  host_rng = np.random.default_rng(0)
  np.random.seed(0)
  batches = [make_tokens(host_rng) for _ in range(args.steps)]
  hf_batches = [hf_collate(t) for t in batches]

  rw_state, rewire_step = make_rewire_step(cfg)
  hf_state, hf_step = make_hf_step(cfg, make_optimizer())
  hf_rng = jax.random.PRNGKey(1)

  def run_rewire():
    nonlocal rw_state
    for tokens in batches:
      rw_state, metrics = rewire_step(rw_state, tokens)
    return metrics["loss"].block_until_ready()

  def run_hf(host_masking: bool):
    nonlocal hf_state, hf_rng
    for tokens, pre in zip(batches, hf_batches):
      batch = hf_collate(tokens) if host_masking else dict(pre)
      hf_state, metrics, hf_rng = hf_step(hf_state, batch, hf_rng)
    return metrics["loss"].block_until_ready()

  sides = {"rewire": run_rewire, "hf_step": lambda: run_hf(False), "hf_loop": lambda: run_hf(True)}
  for name, fn in sides.items():  # compile + warm up
    t0 = time.perf_counter()
    loss = fn()
    print(f"warm-up {name:8s} {time.perf_counter() - t0:6.1f} s  (loss {float(loss):.3f})", flush=True)

  times: dict[str, list[float]] = {name: [] for name in sides}
  order = list(sides)
  for r in range(args.rounds):
    for name in (order if r % 2 == 0 else order[::-1]):
      t0 = time.perf_counter()
      sides[name]()
      times[name].append(time.perf_counter() - t0)

  tokens_per_rep = args.steps * BATCH * SEQ
  result = {}
  print(f"\n{args.rounds} rounds x {args.steps} steps, batch {BATCH}x{SEQ}, backend "
        f"{jax.default_backend()} ({jax.device_count()} device(s))")
  for name, ts in times.items():
    best, med = min(ts), float(np.median(ts))
    result[name] = tokens_per_rep / med
    print(f"  {name:8s} median {med / args.steps * 1e3:7.1f} ms/step  {tokens_per_rep / med:8.0f} tokens/s"
          f"  (best {tokens_per_rep / best:8.0f})")
  print(f"  ratio rewire / hf_step = {result['rewire'] / result['hf_step']:.2f}x"
        f"   rewire / hf_loop = {result['rewire'] / result['hf_loop']:.2f}x")
  return result


if __name__ == "__main__":
  main()
