"""The plasticity probe: fresh embeddings per language on a frozen body, several seeds, one compiled step.

    python -m rewire.main --config=configs/probe.py --workdir=runs/probe --config.init_from=runs/forget

Add any corpus as a probe language from the command line (NAME=SOURCE pairs, comma-separated):

    --config.languages=en=bundled:bible_en,es=bundled:bible_es,de=files:/data/de/*.txt.xz

The family (encoder or decoder), the shape and, unless `model.dropout` / `model.attention_dropout` are set,
the dropout come from the body in `init_from`.

Presets:

* `tiny` (default): for the CPU-sized models of `configs/pretrain_*.py:tiny` (reads `runs/forget` unless
  `init_from` says otherwise); English (Old Testament, relearned from scratch), Spanish and Japanese Bibles;
  100k-token budget, 300 updates, 3 seeds.
  Hardware: 2 CPU cores, a few minutes. Writes probe.json, probe.md (mean ± 95% t-interval over seeds of
  the final loss, the area under the curve and the updates to reach the target) and probe.png.
* `tiny-llama`: the same recipe for the tiny decoder of `configs/pretrain_forget.py:tiny-llama`
  (`runs/forget_llama`): fresh input embeddings and a fresh output head, next-token validation loss.
    python -m rewire.main --config=configs/probe.py:tiny-llama --workdir=runs/probe_llama
* `base`, `base-llama`: for base-sized models (a rewire `:base` or `:base-llama` run, or `python -m
  rewire.hf import FacebookAI/roberta-base`): 5M-token budgets of prepared CC-100 languages, 2,000 updates
  of batch 256x512.
"""

from rewire.config import probe_defaults
from rewire.config.presets import split_preset, tiny_source


def get_config(preset: str = "tiny"):
  preset, family = split_preset(preset)
  c = probe_defaults()
  if preset == "tiny":
    c.init_from = tiny_source(family)
  else:
    c.languages = "en=prepared:data/cc100_en,de=prepared:data/cc100_de,th=prepared:data/cc100_th"
    c.token_budgets = (5_000_000,)
    c.update(total_steps=2000, batch_size=256, eval_every=100)
    c.data.update(seq_len=512, vocab_size=50_000, max_valid_sequences=512)
    c.optim.update(lr=7e-4, warmup_steps=160)
  return c
