"""Language-adaptation step: embedding-only gradients vs a full gradient with a masked optimizer.

Both sides run rewire's real adaptation train step (`rewire.stages.pretrain_setup.Setup` with the `adapt_language` label
table: only the token embeddings train, everything else is frozen by `optax.multi_transform`) on the same
shapes as `pretrain_step.py`: 4 layers, hidden 256, 4 heads, FFN 1024, vocab 8192, batch 32 x 128, fp32,
dropout 0.1 (the recipe's; `--dropout 0` for the dropout-free figure).

(a) embedding-only: the loss is differentiated with respect to the trainable subtree only; the frozen
    body is closed over, so XLA computes no weight gradient for it (only the activation gradients that
    flow back to the embeddings).
(b) full gradient + masked optimizer: every parameter is differentiated and the frozen groups' updates
    are zeroed by `set_to_zero` -- what freezing by optimizer mask alone costs.

Timed: N consecutive steps ending in `block_until_ready`, after an untimed warm-up, in R rounds that
alternate the order of the sides; medians are reported, with the ratio. The final embeddings of the two
sides are compared as a check that both computed the same update.

Run: `python benchmarks/adapt_step.py [--steps N] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from rewire.config import adapt_language_defaults  # noqa: E402
from rewire.data.tokenizer import SpecialIds  # noqa: E402
from rewire.sharding import make_mesh  # noqa: E402
from rewire.stages.pretrain_setup import Setup  # noqa: E402

VOCAB, HIDDEN, LAYERS, HEADS, FFN = 8192, 256, 4, 4, 1024
BATCH, SEQ = 32, 128


def make_setup(full_gradient: bool, dropout: float = 0.1) -> Setup:
  c = adapt_language_defaults()
  c.update(total_steps=100_000, batch_size=BATCH)
  c.model.update(hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS, intermediate_size=FFN,
                 dropout=dropout, attention_dropout=dropout)
  c.data.update(seq_len=SEQ, vocab_size=VOCAB)
  c.optim.update(lr=1e-4, warmup_steps=0)
  mesh = make_mesh(c.mesh, jax.devices()[:1])
  specials = SpecialIds.layout(VOCAB)
  return Setup(c, mesh, specials, full_gradient=full_gradient)


def main(argv=None) -> dict[str, float]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout (recipe: 0.1)")
  args = parser.parse_args(argv)
  rng = np.random.default_rng(0)
  batches = []
  for _ in range(args.steps):
    t = rng.integers(4, VOCAB - 1, size=(BATCH, SEQ), dtype=np.int32)
    t[:, 0], t[:, -1] = 0, 2
    batches.append(t)

  sides = {}
  for name, full in (("embedding_only", False), ("full_gradient", True)):
    setup = make_setup(full, args.dropout)
    sides[name] = {"setup": setup, "state": setup.init()}

  def run(name):
    side = sides[name]
    for tokens in batches:
      side["state"], metrics = side["setup"].train_step(side["state"], tokens)
    return metrics["loss"].block_until_ready()

  for name in sides:
    t0 = time.perf_counter()
    loss = run(name)
    print(f"warm-up {name:15s} {time.perf_counter() - t0:6.1f} s  (loss {float(loss):.3f})", flush=True)
  times = {name: [] for name in sides}
  order = list(sides)
  for r in range(args.rounds):
    for name in (order if r % 2 == 0 else order[::-1]):
      t0 = time.perf_counter()
      run(name)
      times[name].append(time.perf_counter() - t0)

  emb = lambda s: np.asarray(s["state"]["params"]["roberta"]["embeddings"]["word_embeddings"]["embedding"])
  diff = float(np.abs(emb(sides["embedding_only"]) - emb(sides["full_gradient"])).max())
  tokens = args.steps * BATCH * SEQ
  result = {name: tokens / float(np.median(ts)) for name, ts in times.items()}
  print(f"\n{args.rounds} rounds x {args.steps} steps, batch {BATCH}x{SEQ}, dropout {args.dropout}, "
        f"backend {jax.default_backend()}")
  for name, ts in times.items():
    print(f"  {name:15s} median {np.median(ts) / args.steps * 1e3:7.1f} ms/step  {result[name]:8.0f} tokens/s")
  print(f"  ratio embedding_only / full_gradient = {result['embedding_only'] / result['full_gradient']:.2f}x")
  print(f"  same embeddings after {(args.rounds + 1) * args.steps} steps: max abs diff {diff:.2e}")
  return result


if __name__ == "__main__":
  main()
