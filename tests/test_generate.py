"""Sampling from decoders: the cached sampler equals sampling without a cache, compiles per bucket, the CLI."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import xla_flags
from rewire.errors import UserError
from rewire.generate import Sampler, load_decoder, sample_uncached
from rewire.generate.sampler import pick
from rewire.models import registry
from rewire.models.llama import LlamaConfig


@pytest.fixture(scope="module")
def tiny():
  import flax.linen as nn
  cfg = LlamaConfig(vocab_size=53, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    intermediate_size=40, max_position_embeddings=64)
  model = registry.make_model("LlamaForCausalLM", cfg)
  params = nn.unbox(registry.init_variables(model, jax.random.key(1))["params"])
  # A larger output scale, so sampling at temperature 1 is not uniform noise.
  params["lm_head"]["kernel"] = params["lm_head"]["kernel"] * 40.0
  return model, params


@pytest.mark.parametrize("temperature,top_p,seed", [(0.0, 1.0, 0), (1.0, 1.0, 3), (0.8, 0.7, 5)])
def test_cached_sampling_equals_sampling_without_a_cache(tiny, temperature, top_p, seed):
  model, params = tiny
  prompt = [0, 7, 9, 11, 4]
  kw = dict(num_samples=3, max_new_tokens=20, temperature=temperature, top_p=top_p, seed=seed)
  cached = Sampler(model, params).sample(prompt, **kw)
  reference = sample_uncached(model, params, prompt, **kw)
  assert cached == reference
  assert all(len(x) == 20 for x in cached)
  if temperature > 0:
    assert len({tuple(x) for x in cached}) > 1  # the rows sample independently


def test_one_compile_per_prompt_bucket(tiny):
  model, params = tiny
  sampler = Sampler(model, params)
  for prompt in ([0, 5], [0, 5, 6, 7, 8], list(range(4, 16))):  # all in the 16-token bucket
    sampler.sample(prompt, max_new_tokens=8)
  assert sampler.compiles() == 1
  sampler.sample(list(range(4, 24)), max_new_tokens=8)  # 20 tokens: the 32-token bucket
  assert sampler.compiles() == 2


def test_sampling_stops_at_the_end_of_sequence_token(tiny):
  model, params = tiny
  sampler = Sampler(model, params)
  greedy = sampler.sample([0, 7, 9], max_new_tokens=6)[0]
  cut = sampler.sample([0, 7, 9], max_new_tokens=6, eos_id=greedy[2])[0]
  assert cut == greedy[:greedy.index(greedy[2]) + 1]


def test_pick_is_greedy_at_temperature_zero_and_top_p_keeps_the_top_token():
  logits = jnp.asarray([[0.0, 3.0, 1.0, 2.9], [5.0, 0.0, 0.0, 4.0]])
  key = jax.random.key(0)
  assert pick(logits, key, jnp.float32(0.0), jnp.float32(1.0)).tolist() == [1, 0]
  for i in range(20):  # top_p below the top token's probability leaves only that token
    assert pick(logits, jax.random.fold_in(key, i), jnp.float32(1.0), jnp.float32(0.01)).tolist() == [1, 0]
  draws = {int(pick(logits, jax.random.fold_in(key, i), jnp.float32(1.0), jnp.float32(1.0))[0]) for i in range(60)}
  assert {1, 3} <= draws


def test_a_prompt_past_the_positions_is_a_clear_error(tiny):
  model, params = tiny
  with pytest.raises(UserError, match="exceeds the model's 64 positions"):
    Sampler(model, params).sample(list(range(60)), max_new_tokens=10)


def test_an_assembled_task_model_samples_with_its_adaptations_head(family_runs):
  assembled, adapted = (str(family_runs("llama", k)[0]) for k in ("assembled", "adapted"))
  dec = load_decoder(assembled)
  assert dec.head_from == adapted
  ref = load_decoder(adapted)
  np.testing.assert_array_equal(dec.params["lm_head"]["kernel"], ref.params["lm_head"]["kernel"])
  assert Sampler(dec.model, dec.params).sample(dec.encode("DOG EHT"), max_new_tokens=5)


def test_the_command_line_prints_samples_and_refuses_an_encoder(family_runs, tiny_runs):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1),
             PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  run = lambda *a: subprocess.run([sys.executable, "-m", "rewire.generate", *a], capture_output=True, text=True,
                                  env=env)
  proc = run(f"--checkpoint={family_runs('llama', 'pretrained')[0]}", "--prompt=In the beginning", "--prompt=And God",
             "--num_samples=2", "--max_new_tokens=6", "--temperature=0.9")
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert [l.split("]")[0] for l in lines] == ["[prompt 0, sample 0", "[prompt 0, sample 1", "[prompt 1, sample 0",
                                              "[prompt 1, sample 1"]
  assert "tokens/s" in proc.stderr
  bad = run(f"--checkpoint={tiny_runs('one_device')[0]}", "--prompt=x")
  errors = [l for l in bad.stderr.splitlines() if l.startswith("rewire: error")]
  assert bad.returncode == 2 and len(errors) == 1 and "RobertaForMaskedLM" in errors[0]


def test_the_command_line_prints_the_prompt_once_joined_to_its_continuation(family_runs, capsys):
  from rewire.generate.cli import main
  workdir, text = str(family_runs("llama", "pretrained")[0]), "In the beginning "  # a trailing space, as typed
  assert main([f"--checkpoint={workdir}", f"--prompt={text}", "--max_new_tokens=6", "--temperature=0"]) == 0
  line = capsys.readouterr().out.splitlines()[0]
  dec = load_decoder(workdir)
  prompt = dec.encode(text)
  new = Sampler(dec.model, dec.params).sample(prompt, max_new_tokens=6, eos_id=dec.special("</s>"))[0]
  # One decode of prompt and continuation: the prompt once, as the model read it, and no seam after it.
  assert line == f"[prompt 0, sample 0] {dec.decode(prompt + new)}"
  assert line.count("In the beginning") == 1 and "  " not in line
