"""The accelerator check: `pretrain_forget.py:base` shapes in bf16 on one GPU, rewire against HF, in one run.

Measured side by side on the first device, each side timed over `--steps` consecutive steps ending in
`block_until_ready`, after an untimed compile-and-warm-up repetition, in `--rounds` alternating rounds
(medians reported):

* rewire: the real forgetting train step (`rewire.stages.pretrain_setup.Setup`): on-device masking, the MLM
  head at the gathered masked positions, clipping, the forgetting wrapper, AdamW; bf16 compute with fp32
  master weights, attention dropout off (so attention is `jax.nn.dot_product_attention`);
* HF: `FlaxRobertaForMaskedLM(dtype=bfloat16)` + optax AdamW as `run_mlm_flax` trains it (logits at every
  position, pre-masked batches), the same shapes and dropout.

Both report tokens/s and MFU against the device's peak (`rewire.models.flops`), with the same model FLOPs
(rewire's count: the head at the masked positions; HF's extra logits are its own cost). It also checks that
forgetting resets land at every K (a short run with K=5: the step's `forgot` flag at 5, 10, 15 and only
there, and a reset embedding with std 0.02), and that XLA lowered attention to cuDNN's fused attention
(a `__cudnn$fmha` custom call in the compiled step).

Run: `bash benchmarks/gpu_check.sh [OUT_DIR]` (writes OUT_DIR/gpu_check.json); on CPU it runs too, with
`--tiny`, to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from rewire.config import pretrain_preset  # noqa: E402
from rewire.data.tokenizer import SpecialIds  # noqa: E402
from rewire.models import flops  # noqa: E402
from rewire.optim import get_path  # noqa: E402
from rewire.sharding import make_mesh  # noqa: E402
from rewire.stages.pretrain_setup import Setup  # noqa: E402

PAD, MASK_PROB = 1, 0.15


def base_config(args, *, forget_every: int, total_steps: int):
  c = pretrain_preset("base", forgetting=True)
  c.update(total_steps=total_steps, forget_every=forget_every, batch_size=args.batch)
  c.model.update(dtype="bfloat16", attention_dropout=0.0)
  c.data.update(seq_len=args.seq, vocab_size=args.vocab)
  if args.tiny:
    c.model.update(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)
  return c


def rewire_side(args):
  c = base_config(args, forget_every=1000, total_steps=100_000)
  mesh = make_mesh(c.mesh, jax.devices()[:1])
  setup = Setup(c, mesh, SpecialIds(bos=0, pad=PAD, eos=2, unk=3, mask=args.vocab - 1, vocab_size=args.vocab))
  return setup, setup.init()


def tokens(args, rng):
  t = rng.integers(4, args.vocab - 1, size=(args.batch, args.seq), dtype=np.int32)
  t[:, 0], t[:, -1] = 0, 2
  return t


def hf_side(args, setup):
  from transformers import FlaxRobertaForMaskedLM, RobertaConfig
  cfg = setup.model_config
  model = FlaxRobertaForMaskedLM(RobertaConfig(**{**cfg.to_hf_dict(), "attention_probs_dropout_prob": 0.0}),
                                 seed=0, dtype=jnp.bfloat16)
  tx = optax.adamw(1e-4, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01)
  state = (model.params, tx.init(model.params))

  def step(state, batch, rng):
    params, opt = state

    def loss_fn(p):
      logits = model(batch["input_ids"], batch["attention_mask"], params=p, dropout_rng=rng, train=True)[0]
      weights = (batch["labels"] > 0).astype(jnp.float32)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), batch["labels"])
      return (ce * weights).sum() / weights.sum()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates), opt), loss

  return state, jax.jit(step, donate_argnums=(0,))


def hf_batch(args, rng):
  t = tokens(args, rng)
  masked = rng.random(t.shape) < MASK_PROB
  labels = np.where(masked, t, 0).astype(np.int32)
  return {"input_ids": np.where(masked, args.vocab - 1, t).astype(np.int32),
          "attention_mask": np.ones_like(t), "labels": labels}


def timed(fn, steps: int) -> float:
  t0 = time.perf_counter()
  jax.block_until_ready(fn(steps))
  return time.perf_counter() - t0


def check_resets(args) -> dict:
  """A short forgetting run with K=5: resets after updates 5, 10 and 15 only, to N(0, 0.02)."""
  c = base_config(args, forget_every=5, total_steps=16)
  mesh = make_mesh(c.mesh, jax.devices()[:1])
  setup = Setup(c, mesh, SpecialIds(bos=0, pad=PAD, eos=2, unk=3, mask=args.vocab - 1, vocab_size=args.vocab))
  state, rng, forgot, stds = setup.init(), np.random.default_rng(1), [], {}
  path = setup.family.word_embedding_path()
  for step in range(1, 17):
    state, metrics = setup.train_step(state, tokens(args, rng))
    if bool(metrics["forgot"]):
      forgot.append(step)
      emb = np.asarray(jax.device_get(get_path(state["params"], path)), np.float32)
      stds[step] = float(np.delete(emb, PAD, axis=0).std())
  return {"forget_every": 5, "reset_steps": forgot, "ok": forgot == [5, 10, 15]
          and all(abs(s - 0.02) < 0.002 for s in stds.values()), "reset_embedding_std": stds}


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--seq", type=int, default=512)
  p.add_argument("--vocab", type=int, default=50_000)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--tiny", action="store_true", help="a small model, to check the script on a CPU")
  p.add_argument("--out", default="gpu_check.json")
  args = p.parse_args(argv)
  device = jax.devices()[0]
  rng = np.random.default_rng(0)
  setup, state = rewire_side(args)
  batch = tokens(args, rng)
  hlo = setup.train_step.lower(state, batch).compile().as_text()
  sides = {"rewire": {"state": state}, "hf": {}}
  sides["hf"]["state"], hf_step = hf_side(args, setup)
  hb = hf_batch(args, rng)

  def run_rewire(n):
    for _ in range(n):
      sides["rewire"]["state"], m = setup.train_step(sides["rewire"]["state"], batch)
    return m["loss"]

  def run_hf(n):
    key = jax.random.key(0)
    for _ in range(n):
      sides["hf"]["state"], loss = hf_step(sides["hf"]["state"], hb, key)
    return loss

  fns = {"rewire": run_rewire, "hf": run_hf}
  for fn in fns.values():
    timed(fn, 1)  # compile and warm up
  times = {k: [] for k in fns}
  for r in range(args.rounds):
    for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
      times[k].append(timed(fns[k], args.steps))
  step_flops = setup.step_flops()
  peak = flops.peak_flops(device)
  out = {"device": device.device_kind, "platform": device.platform, "batch": args.batch, "seq_len": args.seq,
         "model": {k: getattr(setup.model_config, k) for k in ("hidden_size", "num_layers", "num_heads",
                                                              "intermediate_size", "vocab_size", "dtype")},
         "steps": args.steps, "rounds": args.rounds, "step_tflops": step_flops / 1e12,
         "peak_tflops": peak / 1e12 if peak else None}
  for k, ts in times.items():
    s = float(np.median(ts)) / args.steps
    out[k] = {"step_s": s, "tokens_per_s": args.batch * args.seq / s,
              "mfu": step_flops / s / peak if peak else None}
  out["speedup_rewire_over_hf"] = out["hf"]["step_s"] / out["rewire"]["step_s"]
  out["cudnn_flash_attention"] = "__cudnn$fmha" in hlo
  out["resets"] = check_resets(args)
  with open(args.out, "w") as f:
    json.dump(out, f, indent=2)
  print(json.dumps(out, indent=2))
  return out


if __name__ == "__main__":
  main()
