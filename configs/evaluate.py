"""Zero-shot evaluation of assembled task models, one per language; with a "standard" and a "forget" model it
also reports the paper's headline statistic (mean over languages of the relative gain 100*(F-S)/S).

    python -m rewire.main --config=configs/evaluate.py --workdir=runs/eval \
        --config.models=standard=runs/standard_nli_{lang},forget=runs/forget_nli_{lang} \
        --config.languages="('es',)"
  `tiny` (default) reads the bundled verse-pair NLI test split; `base` reads XNLI (hf:xnli:{lang}:test);
  for MLQA/XQuAD pass e.g. --config.test_source=hf:xquad:xquad.{lang}:validation.
  Seconds to minutes. Writes results.json and results.md.
"""

from rewire.config import evaluate_defaults


def get_config(preset: str = "tiny"):
  c = evaluate_defaults()
  if preset != "base":
    c.test_source = "bundled:verse_nli:test"
  return c
