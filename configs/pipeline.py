"""The whole method from one command, for a standard and a forgetting model: pretrain, adapt to each
language, fine-tune in English, assemble, evaluate zero-shot, and write `report.md`.

* `tiny` (default): the bundled English Bible for pretraining, Spanish (Old Testament) for adaptation, the
  bundled verse-pair NLI task (English train/dev, New Testament test in every language).
    python -m rewire.main --config=configs/pipeline.py --workdir=runs/pipeline
  Hardware: 2 CPU cores, under 20 minutes. Expected: `report.md` with the zero-shot accuracy of both models,
  the mean relative gain, and `adaptation.png` (MLM loss against updates per language, both models).
  A tiny model on a tiny corpus is a demonstration of the machinery, not a replication of the paper.

* `base`: the paper's setting: CC-100 English pretraining (125k updates, K=1000), 5M-token adaptation to
  each XNLI language, MultiNLI fine-tuning, XNLI evaluation. Needs the Hugging Face datasets locally.
    python -m rewire.main --config=configs/pipeline.py:base --workdir=runs/pipeline_base
"""

from rewire.config import pipeline_preset


def get_config(preset: str = "tiny"):
  return pipeline_preset(preset)
