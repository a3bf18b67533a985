"""Zero-shot evaluation of assembled task models, one per language; with a "standard" and a "forget" model it
also reports the paper's headline statistic (mean over languages of the relative gain 100*(F-S)/S).

    python -m rewire.main --config=configs/evaluate.py --workdir=runs/eval \
        --config.models.standard.es=runs/standard_nli_es --config.models.forget.es=runs/forget_nli_es
  (with `:base`, test_source is XNLI: hf:xnli:{lang}:test; MLQA/XQuAD: --config.test_source=hf:xquad:xquad.{lang}:validation)
  Seconds to minutes. Writes results.json and results.md.
"""

import ml_collections

from rewire.config import evaluate_defaults


def get_config(preset: str = "tiny"):
  c = evaluate_defaults()
  if preset != "base":
    c.test_source = "bundled:verse_nli:test"
  # Declare the usual model slots so that --config.models.NAME.LANG=... overrides work.
  c.models = ml_collections.ConfigDict({"standard": ml_collections.ConfigDict(),
                                        "forget": ml_collections.ConfigDict()})
  return c
