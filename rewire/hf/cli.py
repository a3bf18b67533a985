"""The Hugging Face command line: `python -m rewire.hf export|import ...`, with one-line errors.

  python -m rewire.hf export --checkpoint=runs/forget [--step=N] --out=hf/forget
  python -m rewire.hf import --hf=hf/xlm-roberta-base --out=runs/xlmr
  python -m rewire.hf import --hf=hf/TinyLlama --out=runs/tinyllama
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from rewire.errors import UserError
from rewire.hf.export import export_checkpoint
from rewire.hf.importer import import_checkpoint


class _Parser(argparse.ArgumentParser):
  def error(self, message: str) -> None:  # one line, like every other rewire error
    print(f"rewire: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: Sequence[str] | None = None) -> int:
  parser = _Parser(prog="python -m rewire.hf", description="Hugging Face export and import.")
  sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
  ex = sub.add_parser("export", help="rewire workdir -> Hugging Face model directory")
  ex.add_argument("--checkpoint", required=True, help="the rewire workdir")
  ex.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
  ex.add_argument("--out", required=True, help="the Hugging Face directory to write")
  im = sub.add_parser("import", help="Hugging Face model directory -> new rewire workdir")
  im.add_argument("--hf", required=True, help="a local RoBERTa, XLM-R, Llama or Mistral directory")
  im.add_argument("--out", required=True, help="the rewire workdir to create")
  args = parser.parse_args(argv)
  try:
    if args.command == "export":
      summary = export_checkpoint(args.checkpoint, args.out, args.step)
    else:
      summary = import_checkpoint(args.hf, args.out)
  except UserError as e:
    print(f"rewire: error: {e}", file=sys.stderr)
    return 2
  print(json.dumps(summary))
  return 0
