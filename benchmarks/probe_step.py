"""Plasticity probe: T embedding tables stacked on one frozen body vs the same T tables one after another.

Both sides run `rewire.probe.stacked.StackedProbe` on the shapes of the study's probe (`configs/study.py`): a
2-layer, hidden-128 RoBERTa body (4 heads, FFN 512), vocab 4096, batch 32 x 64 per table, fp32, dropout
0.1, AdamW. The stacked side trains all T tables in one compiled step (`jax.vmap` over the tables); the
sequential side trains each table alone with a one-table probe, T times. Each side does the same work:
T tables x S updates, plus the same evaluations.

Timed: the whole `run` (compile excluded: each side runs once untimed first, which compiles it), in R
rounds that alternate the order; medians are reported with the ratio. The final tables of the two sides
are compared as a check that they computed the same thing.

Run: `python benchmarks/probe_step.py [--tables 12] [--steps 20] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from rewire.data.tokenizer import SpecialIds  # noqa: E402
from rewire.models.registry import init_variables  # noqa: E402
from rewire.models.roberta import RobertaConfig  # noqa: E402
from rewire.models.roberta_heads import RobertaForMaskedLM  # noqa: E402
from rewire.probe.stacked import StackedProbe, Table, TableData  # noqa: E402
from rewire.sharding import make_mesh  # noqa: E402

VOCAB, HIDDEN, LAYERS, HEADS, FFN = 4096, 128, 2, 4, 512
BATCH, SEQ = 32, 64


def main(argv=None) -> dict[str, float]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--tables", type=int, default=12)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args(argv)
  mc = RobertaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS,
                   intermediate_size=FFN, max_position_embeddings=SEQ + 2)
  body = jax.tree.map(np.asarray, init_variables(RobertaForMaskedLM(mc), jax.random.key(0), SEQ)["params"])
  specials = SpecialIds.layout(VOCAB)
  optim_cfg = ml_collections.ConfigDict(dict(lr=2e-3, warmup_steps=2, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01))
  mesh = make_mesh(ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)), jax.devices()[:1])
  rng = np.random.default_rng(0)
  tables = [Table(f"lang{i % 4}", 1000 * (1 + i // 4), i) for i in range(args.tables)]
  data = [TableData(train=rng.integers(4, VOCAB - 1, (256, SEQ)).astype(np.int32),
                    valid=rng.integers(4, VOCAB - 1, (32, SEQ)).astype(np.int32)) for _ in tables]
  make = lambda n: StackedProbe(mc, specials, seq_len=SEQ, mask_prob=0.15, optim_cfg=optim_cfg,
                                total_steps=args.steps, init_std=0.02, mesh=mesh, num_tables=n)
  stacked, single = make(len(tables)), make(1)
  sides = {
      "stacked": lambda: stacked.run(body, tables, data, batch_size=BATCH, eval_every=args.steps)[2],
      "sequential": lambda: np.concatenate([single.run(body, [t], [d], batch_size=BATCH,
                                                       eval_every=args.steps)[2] for t, d in zip(tables, data)]),
  }
  finals, first = {}, {}
  for name, fn in sides.items():  # the first run of each side compiles it
    t0 = time.perf_counter()
    finals[name] = fn()
    first[name] = time.perf_counter() - t0
  np.testing.assert_allclose(finals["stacked"], finals["sequential"], rtol=1e-3, atol=1e-5)
  times = {name: [] for name in sides}
  for r in range(args.rounds):
    for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
      t0 = time.perf_counter()
      sides[name]()
      times[name].append(time.perf_counter() - t0)
  med = {name: float(np.median(ts)) for name, ts in times.items()}
  table_steps = len(tables) * args.steps
  for name, t in med.items():
    print(f"{name:>10}: {t:7.2f} s for {len(tables)} tables x {args.steps} updates "
          f"({table_steps * BATCH * SEQ / t:,.0f} tokens/s); first run, compile included: {first[name]:.2f} s")
  print(f"stacked is {med['sequential'] / med['stacked']:.2f}x the sequential throughput")
  return med


if __name__ == "__main__":
  main()
