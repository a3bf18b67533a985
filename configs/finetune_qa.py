"""Task adaptation for extractive QA: fine-tune the body and a span head in English, token embeddings
frozen; keep the epoch with the best dev F1 (SQuAD normalisation).

* `tiny` (default): the bundled verse QA task (SQuAD schema; see rewire/data/bundled_tasks/README.md):
    python -m rewire.main --config=configs/finetune_qa.py --workdir=runs/forget_qa
  Hardware: 2 CPU cores, a few minutes.

* `base`: SQuAD v1.1, lr 3e-5, 6% warm-up then linear decay, batch 24, 10 epochs, max_len 384, stride 128.
    python -m rewire.main --config=configs/finetune_qa.py:base --workdir=runs/forget_base_qa \
        --config.init_from=runs/forget_base
"""

from rewire.config import finetune_defaults, tiny_stage_config


def get_config(preset: str = "tiny"):
  if preset == "base":
    c = finetune_defaults()
    c.update(task="qa", train_source="hf:squad:train", dev_source="hf:squad:validation", max_len=384,
             doc_stride=128, max_query_len=64, batch_size=24, eval_batch_size=48)
    c.optim.update(lr=3e-5, warmup_fraction=0.06)
    return c
  return tiny_stage_config("finetune_qa")
