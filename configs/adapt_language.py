"""Language adaptation: a new tokenizer and new token embeddings for a new language, on a frozen body.

Only the token embeddings (and so the tied LM decoder) train; the body, the position embeddings and the
LM head stay frozen, and the frozen subtree gets no weight gradient at all. The embeddings (and the
vocabulary-sized LM-head bias) are re-initialised at the new tokenizer's size, N(0, 0.02) with a fixed seed.
`--config.reinit.method` starts them from the source's rows instead: mean, overlap, focus, omp or script
(README, "How new vocabulary rows start").

* `tiny` (default): adapt `runs/forget` (from configs/pretrain_forget.py) to Spanish (Reina-Valera 1909,
  Old Testament only: the New Testament is held out for the zero-shot tests) on a 100k-token budget.
    python -m rewire.main --config=configs/adapt_language.py --workdir=runs/forget_es
    python -m rewire.main --config=configs/adapt_language.py --workdir=runs/standard_es \
        --config.init_from=runs/standard
  Hardware: 2 CPU cores, about 1 minute. Expected: `metrics.jsonl` traces the adaptation curve (MLM loss
  against updates); a forgetting model's curve falls faster than a standard one's.

* `tiny-llama`: the same for the tiny decoder of `configs/pretrain_forget.py:tiny-llama` (`runs/forget_llama`):
  fresh input embeddings and a fresh output head, the decoder body frozen.
    python -m rewire.main --config=configs/adapt_language.py:tiny-llama --workdir=runs/forget_llama_es
* `base`: the paper's low-data regime: 5M tokens of CC-100, repeated, with the pretraining recipe minus
  clipping (125k updates, batch 2048x512, lr 7e-4).
    python -m rewire.main --config=configs/adapt_language.py:base --workdir=runs/forget_base_de \
        --config.init_from=runs/forget_base --config.data.source=prepared:data/cc100_de
  Hardware: as for pretraining (the body is frozen, so about a third of the FLOPs).
"""

from rewire.config import adapt_language_defaults, tiny_stage_config
from rewire.config.presets import split_preset


def get_config(preset: str = "tiny"):
  preset, family = split_preset(preset)
  if preset == "base":
    return adapt_language_defaults()  # the family comes from init_from
  return tiny_stage_config("adapt_language", family)
