"""The sampling command line: `python -m rewire.generate --checkpoint=DIR --prompt=TEXT [--prompt=...]`.

  python -m rewire.generate --checkpoint=runs/forget_llama_es --prompt="En el principio" \
      --temperature=0.8 --top_p=0.95 --num_samples=3 --max_new_tokens=48

Greedy with `--temperature=0`. Each sample is printed as `[prompt i, sample j] text`, the text being the
prompt (once, as the tokenizer reads it) and its continuation decoded together; `--json` prints one JSON
object per sample instead, whose `text` and `ids` are the continuation alone. Errors are one line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

from rewire.errors import UserError
from rewire.generate.load import load_decoder
from rewire.generate.sampler import Sampler


class _Parser(argparse.ArgumentParser):
  def error(self, message: str) -> None:
    print(f"rewire: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: Sequence[str] | None = None) -> int:
  p = _Parser(prog="python -m rewire.generate", description="Sample from a decoder workdir.")
  p.add_argument("--checkpoint", required=True, help="a Llama-family workdir (pretrained, adapted, assembled)")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
  p.add_argument("--prompt", action="append", required=True, help="a prompt (repeat for several)")
  p.add_argument("--max_new_tokens", type=int, default=48)
  p.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
  p.add_argument("--top_p", type=float, default=0.95)
  p.add_argument("--num_samples", type=int, default=1, help="samples per prompt")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--json", action="store_true", help="one JSON object per sample")
  args = p.parse_args(argv)
  try:
    if args.max_new_tokens < 1 or args.num_samples < 1:
      raise UserError("--max_new_tokens and --num_samples must be >= 1")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
      raise UserError("--temperature must be >= 0 and --top_p in (0, 1]")
    dec = load_decoder(args.checkpoint, args.step)
    sampler = Sampler(dec.model, dec.params)
    eos = dec.special("</s>")
    for i, text in enumerate(args.prompt):
      start, compiled = time.perf_counter(), sampler.compiles()
      prompt = dec.encode(text)
      outs = sampler.sample(prompt, num_samples=args.num_samples, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, top_p=args.top_p, seed=args.seed + i,
                            eos_id=-1 if eos is None else eos)
      elapsed = time.perf_counter() - start
      for j, ids in enumerate(outs):
        if args.json:
          print(json.dumps({"prompt": text, "sample": j, "text": dec.decode(ids), "ids": ids,
                            "seconds": round(elapsed, 3)}, ensure_ascii=False))
        else:
          print(f"[prompt {i}, sample {j}] {dec.decode(prompt + ids)}")  # one decode: no seam at the prompt
      if not args.json:
        tokens = sum(len(x) for x in outs)
        note = ", compile included" if sampler.compiles() > compiled else ""
        print(f"  ({tokens} tokens in {elapsed:.2f} s{note}: {tokens / elapsed:.1f} tokens/s)", file=sys.stderr)
  except UserError as e:
    print(f"rewire: error: {e}", file=sys.stderr)
    return 2
  return 0
