"""Pretraining with active forgetting: the token embeddings are reset every `forget_every` updates.

Presets (`--config=configs/pretrain_forget.py:PRESET`):

* `tiny` (default) -- a demo on the bundled English corpus (World English Bible).
    python -m rewire.main --config=configs/pretrain_forget.py --workdir=runs/forget
  Hardware: 2 CPU cores, about 2 minutes (117 s measured, the corpus preparation
  into `runs/forget/data` included). 2-layer, hidden-128 RoBERTa, vocab 2048,
  batch 32x64, 1200 updates, a reset every 200. Expected: `metrics.jsonl` holds resets at 200, 400, ...,
  1000 (none at 1200); the training loss jumps at each reset (to ~7.0) and recovers before the next,
  which `loss.png` shows as a saw-tooth; the final validation loss (5.56 measured) is below the unigram
  baseline recorded at step 0 (5.91).

* `tiny-llama` -- the same run for a Llama-family decoder: 2 layers, hidden 128, grouped-query attention (4
  query, 2 key/value heads), SwiGLU, an untied output head; a next-token objective on the same corpus, the
  input embeddings reset every 200 updates (`--config.forget.pattern=output` or `both` resets the head).
    python -m rewire.main --config=configs/pretrain_forget.py:tiny-llama --workdir=runs/forget_llama
  Hardware: 2 CPU cores, about 5 minutes (5 min 22 s measured with another job on the machine).
  Expected: resets at 200, ..., 1000; next-token validation loss 3.86 at the end (unigram baseline 5.89).

* `base` -- the paper's recipe (Chen et al. 2023): RoBERTa-base, K=1000, 125k updates, batch 2048x512,
  Adam(0.9, 0.98, 1e-6), lr 7e-4 with 10k warm-up and linear decay (the embeddings replay it inside each
  1000-update episode: 80 warm-up updates), weight decay 0.01, dropout 0.1, clip 0.5, 50k unigram vocab.
    python -m rewire.main --config=configs/prepare.py:cc100 --workdir=data/cc100_en   # once
    python -m rewire.main --config=configs/pretrain_forget.py:base --workdir=runs/forget_base
  Hardware: the paper used 32 V100s for 24-36 h; a TPU v4-64 pod slice or 4 nodes of 8 H100 is the
  equivalent. Expected: MLM validation loss saw-tooths with K; adapted to a new language with little data,
  it beats the standard model (XNLI +21.2%, MLQA +33.8% relative in the paper).
"""

from rewire.config import pretrain_preset


def get_config(preset: str = "tiny"):
  return pretrain_preset(preset, forgetting=True)
