"""Standard pretraining (the baseline): the same recipe as `pretrain_forget.py` with no resets, no clipping.

Presets (`--config=configs/pretrain_standard.py:PRESET`):

* `tiny` (default):
    python -m rewire.main --config=configs/pretrain_standard.py --workdir=runs/standard
  Hardware: 2 CPU cores, about 2 minutes (120 s measured). Expected: no `forget` events in
  `metrics.jsonl`; a smoothly falling loss that ends below both the unigram baseline (5.91) and the
  forgetting run's final loss (5.42 vs 5.56 measured: forgetting trades some pretraining loss for
  plasticity).

* `base` -- RoBERTa-base, 125k updates, batch 2048x512, lr 7e-4, 10k warm-up (Chen et al. 2023's baseline).
    python -m rewire.main --config=configs/pretrain_standard.py:base --workdir=runs/standard_base
  (reads `prepared:data/cc100_en`, from `configs/prepare.py:cc100`)
  Hardware: as for the forgetting run (32 V100s for 24-36 h in the paper).
"""

from rewire.config import pretrain_preset


def get_config(preset: str = "tiny"):
  return pretrain_preset(preset, forgetting=False)
