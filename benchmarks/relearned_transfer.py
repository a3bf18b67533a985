"""The end-to-end check of the tokenizer, assembly and evaluation path: relearned English with `overlap`.

    python benchmarks/relearned_transfer.py --out=results/relearned_transfer/roberta.json runs/forget runs/standard
    python benchmarks/relearned_transfer.py --family=llama --out=results/relearned_transfer/llama.json \
        runs/forget_llama runs/standard_llama

For each pretrained body (a quick-start run): the study's English task (`configs/study.py` `cpu`
preset's fine-tune: `verse_genre`, narrative vs discourse verses), then "relearned" English, the
pretraining text met through a fresh 4,096-piece tokenizer, adapted with `reinit.method=overlap` and with
`random` (`configs/adapt_language.py`, 300 updates on 100k tokens), each assembled into the task model and
scored on the English test items. The transfer ratio is that accuracy over the task model's own: with
`overlap`, which copies the rows of every piece the two tokenizers share, it should come close to 100%;
with `random` it measures what the adaptation alone carries. Steps already done under `--work` are reused.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs.adapt_language import get_config as adapt_config  # noqa: E402
from configs.study import get_config as study_config  # noqa: E402
from rewire import sharding, stages  # noqa: E402
from rewire.stages.assemble import assemble  # noqa: E402
from rewire.stages.evaluate import evaluate_model  # noqa: E402

TEST = "bundled:verse_genre:test"


def finished(workdir: str) -> bool:
  path = os.path.join(workdir, "summary.json")
  return os.path.isfile(path) and bool(json.load(open(path)).get("finished"))


def check(body: str, family: str, work: str) -> dict:
  """The English accuracy of `body`'s task model, and each start's relearned zero-shot accuracy and ratio."""
  suffix = "" if family == "roberta" else f"-{family}"
  name = os.path.basename(os.path.normpath(body))
  ft = copy.deepcopy(study_config(f"cpu{suffix}").finetune)
  ft.init_from = body
  task = os.path.join(work, f"{name}_genre")
  if not finished(task):
    stages.run(ft, task)
  mesh, rules = sharding.make_mesh(ft.mesh), sharding.rules_from_config(ft.mesh.rules)
  score = lambda model: evaluate_model(model, TEST, "en", mesh=mesh, rules=rules, batch_size=64)["accuracy"]
  out = {"english": score(task)}
  for method in ("overlap", "random"):
    ad = adapt_config(f"tiny{suffix}")
    ad.init_from = body
    ad.data.update(source="bundled:en_web", vocab_size=4096)
    ad.reinit.method = method
    adapted = os.path.join(work, f"{name}_relearned_{method}")
    if not finished(adapted):
      stages.run(ad, adapted)
    assembled = os.path.join(work, f"{name}_genre_relearned_{method}")
    if not os.path.isdir(assembled):
      assemble(task, adapted, assembled)
    accuracy = score(assembled)
    out[method] = {"zero_shot": accuracy, "ratio": 100.0 * accuracy / out["english"],
                   "vocab_start": json.load(open(os.path.join(adapted, "summary.json"))).get("vocab_start")}
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("bodies", nargs="+", help="pretrained workdirs (the quick start's runs/forget, runs/standard)")
  parser.add_argument("--family", default="roberta")
  parser.add_argument("--work", default="runs/relearned_transfer")
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  results = {os.path.basename(os.path.normpath(b)): check(b, args.family, args.work) for b in args.bodies}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=1)
  print(f"| body | English task | relearned, overlap | ratio | relearned, random | ratio |\n|---|---|---|---|---|---|")
  for name, r in results.items():
    print(f"| {name} | {r['english']:.1f} | {r['overlap']['zero_shot']:.1f} | {r['overlap']['ratio']:.1f}% | "
          f"{r['random']['zero_shot']:.1f} | {r['random']['ratio']:.1f}% |")


if __name__ == "__main__":
  main()
