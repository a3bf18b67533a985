"""Decoder throughput: rewire's Llama train step and cached sampler vs Hugging Face Flax, side by side in one run.

Both sides run the same network with the same params, on whatever JAX backend is active. `--preset=cpu`
(the default; the reference figures are for a 2-core CPU): 4 layers, hidden 256, 4 query / 2 key-value
heads, SwiGLU 688, vocab 8192, untied head, fp32, no dropout, batch 16 x 128. `--preset=gpu`: 12 layers,
hidden 768, 12 / 4 heads, SwiGLU 2048, vocab 32000, bf16 compute, batch 32 x 512.

Training, AdamW (b1=0.9, b2=0.98, eps=1e-6, wd=0.01 off the 1-D norm weights):
(a) rewire: `rewire.stages.pretrain_setup.Setup(...).train_step` of a forgetting run (`model.family=llama`):
    raw token ids in, the next-token loss masked at padding, clipping, the forgetting wrapper (its reset a
    `lax.cond` in the step) and AdamW; one `jax.jit` with the state donated.
(b) HF: `FlaxLlamaForCausalLM` + optax as `examples/flax/language-modeling/run_clm_flax.py` trains it:
    logits at every position, shifted one-hot softmax cross-entropy, `jax.jit` with the state donated.

Sampling, greedy, 8 prompts of 16 tokens, 64 new tokens each (no early stop: no end-of-sequence token):
(a) rewire: `rewire.generate.Sampler` (prefill, then a `lax.while_loop` over a key/value cache, all jitted).
(b) HF: `FlaxLlamaForCausalLM.generate(..., do_sample=False)` (jitted greedy search over its own cache).
Both produce the same tokens; the run checks it.

Memory: the compiled train steps' temporary buffers (XLA's `memory_analysis`, no run needed), where rewire's
fused head + cross-entropy (`rewire.models.head_xent`) never holds the [B, T, V] logits and HF's step holds
them, their softmax and their gradient. `--memory_only` prints just these, e.g. for the gpu preset's shapes
compiled on a CPU host.

What is timed: wall time of N steps (or one sampling call) ending in `block_until_ready`, after one untimed
repetition (compile + warm-up), in R rounds alternating the order of the sides; medians are reported.

Run: `python benchmarks/decoder_step.py [--preset cpu|gpu] [--steps N] [--rounds R] [--memory_only]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

# The shapes of each preset: `cpu` (the reference figures) and `gpu` (a ~160M Llama in bf16, for a GPU host).
PRESETS = {
    "cpu": dict(vocab=8192, hidden=256, layers=4, heads=4, kv_heads=2, ffn=688, batch=16, seq=128,
                dtype="float32"),
    "gpu": dict(vocab=32000, hidden=768, layers=12, heads=12, kv_heads=4, ffn=2048, batch=32, seq=512,
                dtype="bfloat16"),
}
P = dict(PRESETS["cpu"])
PROMPTS, PROMPT_LEN, NEW_TOKENS = 8, 16, 64
BOS, PAD, EOS = 0, 1, 2


def rewire_setup():
  from rewire.config import pretrain_preset
  from rewire.data.tokenizer import SpecialIds
  from rewire.sharding import make_mesh
  from rewire.stages.pretrain_setup import Setup
  c = pretrain_preset("base-llama", forgetting=True)
  c.update(total_steps=100_000, batch_size=P["batch"])
  c.model.update(hidden_size=P["hidden"], num_layers=P["layers"], num_heads=P["heads"], num_kv_heads=P["kv_heads"],
                 intermediate_size=P["ffn"], max_position_embeddings=P["seq"] + NEW_TOKENS, dtype=P["dtype"])
  c.data.update(seq_len=P["seq"], vocab_size=P["vocab"])
  c.optim.update(lr=1e-4, warmup_steps=0)
  mesh = make_mesh(c.mesh, jax.devices()[:1])
  vocab = P["vocab"]
  return Setup(c, mesh, SpecialIds(bos=BOS, pad=PAD, eos=EOS, unk=3, mask=vocab - 1, vocab_size=vocab))


def hf_model(setup):
  from transformers import FlaxLlamaForCausalLM, LlamaConfig
  from rewire.models.llama_family import hf_config_dict
  kw = hf_config_dict(setup.model_config, "LlamaForCausalLM", bos_id=BOS, eos_id=EOS)
  return FlaxLlamaForCausalLM(LlamaConfig(**kw), _do_init=False, dtype=jnp.dtype(P["dtype"]))


def make_hf_step(model, params):
  """run_clm_flax's train step (psum over one device dropped), jitted with the state donated."""
  from flax.training import train_state
  tx = optax.adamw(1e-4, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01,
                   mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p))
  state = train_state.TrainState.create(apply_fn=model.__call__, params=params, tx=tx)

  def train_step(state, batch):
    def loss_fn(params):
      logits = state.apply_fn(batch["input_ids"], params=params, train=False)[0]
      shift_logits, labels = logits[..., :-1, :], batch["input_ids"][..., 1:]
      return optax.softmax_cross_entropy(shift_logits, jax.nn.one_hot(labels, shift_logits.shape[-1])).mean()
    loss, grad = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grad), {"loss": loss}

  return state, jax.jit(train_step, donate_argnums=(0,))


def temp_mib(jitted, *args) -> float:
  """MiB of temporary buffers in the compiled program (XLA's memory analysis; args are not consumed)."""
  return jitted.lower(*args).compile().memory_analysis().temp_size_in_bytes / 2**20


def timed(sides: dict, rounds: int) -> dict[str, list[float]]:
  for name, fn in sides.items():
    t0 = time.perf_counter()
    fn()
    print(f"warm-up {name:14s} {time.perf_counter() - t0:6.1f} s", flush=True)
  times = {name: [] for name in sides}
  order = list(sides)
  for r in range(rounds):
    for name in (order if r % 2 == 0 else order[::-1]):
      t0 = time.perf_counter()
      sides[name]()
      times[name].append(time.perf_counter() - t0)
  return times


def main(argv: list[str] | None = None) -> dict[str, float]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=3, help="train steps per timed repetition")
  parser.add_argument("--rounds", type=int, default=4, help="alternating repetitions per side")
  parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="the shapes (see PRESETS)")
  parser.add_argument("--memory_only", action="store_true", help="compile the train steps, print their memory")
  args = parser.parse_args(argv)
  P.update(PRESETS[args.preset])
  BATCH, SEQ, VOCAB = P["batch"], P["seq"], P["vocab"]
  from rewire.generate import Sampler

  rng = np.random.default_rng(0)
  batches = []
  for _ in range(args.steps):
    t = rng.integers(4, VOCAB, size=(BATCH, SEQ), dtype=np.int32)
    t[:, 0], t[:, -1] = BOS, EOS
    batches.append(t)

  setup = rewire_setup()
  rw_state = setup.init()
  params = jax.device_get(rw_state["params"])
  model = hf_model(setup)
  hf_state, hf_step = make_hf_step(model, jax.tree.map(jnp.asarray, params))
  memory = {"rewire_train_temp_mib": temp_mib(setup.train_step, rw_state, batches[0]),
            "hf_train_temp_mib": temp_mib(hf_step, hf_state, {"input_ids": batches[0]})}
  logits_mib = BATCH * SEQ * VOCAB * 4 / 2**20
  print(f"compiled train-step temporaries ({args.preset} preset, float32 logits would be {logits_mib:.0f} MiB): "
        f"rewire {memory['rewire_train_temp_mib']:.0f} MiB, hf {memory['hf_train_temp_mib']:.0f} MiB", flush=True)
  if args.memory_only:
    return memory

  def run_rewire():
    nonlocal rw_state
    for tokens in batches:
      rw_state, metrics = setup.train_step(rw_state, tokens)
    return metrics["loss"].block_until_ready()

  def run_hf():
    nonlocal hf_state
    for tokens in batches:
      hf_state, metrics = hf_step(hf_state, {"input_ids": tokens})
    return metrics["loss"].block_until_ready()

  train = timed({"rewire_train": run_rewire, "hf_train": run_hf}, args.rounds)

  prompts = rng.integers(4, VOCAB, size=(PROMPTS, PROMPT_LEN), dtype=np.int32)
  prompts[:, 0] = BOS
  sampler = Sampler(setup.model, params)
  hf_params = jax.tree.map(jnp.asarray, params)
  out = {}

  def run_rewire_sample():
    out["rewire"] = sampler.sample_batch(prompts.tolist(), max_new_tokens=NEW_TOKENS)

  def run_hf_sample():
    seqs = model.generate(prompts, params=hf_params, max_new_tokens=NEW_TOKENS, do_sample=False,
                          pad_token_id=PAD, eos_token_id=None).sequences
    out["hf"] = np.asarray(seqs)[:, PROMPT_LEN:].tolist()

  sample = timed({"rewire_sample": run_rewire_sample, "hf_sample": run_hf_sample}, args.rounds)
  same = out["rewire"] == out["hf"]

  result = dict(memory)
  print(f"\n{args.rounds} rounds, backend {jax.default_backend()} ({jax.device_count()} device(s))")
  tokens = args.steps * BATCH * SEQ
  for name, ts in train.items():
    result[name] = tokens / float(np.median(ts))
    print(f"  {name:14s} median {np.median(ts) / args.steps * 1e3:7.1f} ms/step  {result[name]:8.0f} tokens/s")
  new = PROMPTS * NEW_TOKENS
  for name, ts in sample.items():
    result[name] = new / float(np.median(ts))
    print(f"  {name:14s} median {np.median(ts):7.2f} s/call   {result[name]:8.1f} new tokens/s")
  print(f"  train ratio rewire / hf = {result['rewire_train'] / result['hf_train']:.2f}x")
  print(f"  sampling ratio rewire / hf = {result['rewire_sample'] / result['hf_sample']:.2f}x "
        f"(same greedy tokens: {same})")
  return result


if __name__ == "__main__":
  main()
