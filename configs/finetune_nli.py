"""Task adaptation for NLI: fine-tune the body and a 3-way classification head (RoBERTa: on `<s>`; a decoder:
on the last real token) in English, with the token embeddings frozen; keep the epoch with the best dev
accuracy.

* `tiny` (default): the bundled verse-pair task (XNLI schema; see rewire/data/bundled_tasks/README.md) on
  `runs/forget`:
    python -m rewire.main --config=configs/finetune_nli.py --workdir=runs/forget_nli
  Hardware: 2 CPU cores, about 1-2 minutes. Expected: dev accuracy well above the 33% of chance.
* `tiny-llama`: the same on the tiny decoder `runs/forget_llama`, without dropout.

* `base`: MultiNLI, lr 1e-5, batch 32, 10 epochs, model selection on English XNLI dev (Chen et al. 2023).
    python -m rewire.main --config=configs/finetune_nli.py:base --workdir=runs/forget_base_nli \
        --config.init_from=runs/forget_base
  Hardware: one GPU or TPU host, a few hours.
"""

from rewire.config import finetune_defaults, tiny_stage_config
from rewire.config.presets import split_preset


def get_config(preset: str = "tiny"):
  preset, family = split_preset(preset)
  if preset == "base":
    return finetune_defaults()
  return tiny_stage_config("finetune_nli", family)
