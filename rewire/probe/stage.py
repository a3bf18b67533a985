"""The `probe` stage: how fast does a frozen body let fresh token embeddings learn each language?

`python -m rewire.main --config=configs/probe.py --workdir=runs/probe --config.init_from=runs/forget`

For every probe language (any text source, the pretraining language included) the probe takes a fresh
tokenizer, and for every token budget and seed a fresh N(0, init_std) embedding table; it trains only the
tables, on the frozen body of `init_from` (a rewire workdir at `init_step`, or a `python -m rewire.hf
import` directory), for a fixed number of updates, and records validation MLM loss along the way. All
tables run together in one compiled step (`rewire.probe.stacked`). Per language and budget it reports, as
the mean and a t-interval over seeds: the adaptation curve, the updates needed to reach a target loss
(the language's unigram baseline minus `target_margin`, unless `targets` says otherwise), the area under
the curve and the final loss (`rewire.probe.stats`), in `probe.json`, `probe.md` and `probe.png`; with
`save_embeddings`, every table also becomes a language-adapted workdir that `assemble` takes.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import jax
import numpy as np

from rewire import config as rconfig
from rewire import sharding
from rewire import workdir as rworkdir
from rewire.checkpoint import load_params
from rewire.fileio import write_json_atomic
from rewire.models import registry
from rewire.probe.languages import Language, prepare_languages
from rewire.probe.prober import Prober, check_mlm_source
from rewire.probe.report import write_report
from rewire.probe.stacked import with_table


def run(config, workdir: str, *, log_stream=None) -> dict:
  """The `probe` stage: probes `config.init_from` and writes probe.json, probe.md and probe.png."""
  rconfig.validate(config)
  info = check_mlm_source(config.init_from)
  params, step = load_params(config.init_from, config.init_step or None)
  mesh = sharding.make_mesh(config.mesh)
  stream = log_stream or sys.stdout
  with rworkdir.locked(workdir):
    languages = prepare_languages(config, os.path.join(workdir, "languages"), log_stream=log_stream)
    prober = Prober(config, languages, info, mesh)
    print(f"[probe] {config.init_from} at step {step}: {len(prober.tables)} tables "
          f"({len(languages)} languages x {len(config.token_budgets)} budgets x {config.seeds} seeds), "
          f"{config.total_steps} updates", file=stream, flush=True)

    def progress(s, losses):
      if s % max(int(config.eval_every), int(config.total_steps) // 10) == 0 or s == config.total_steps:
        print(f"[probe] update {s}/{config.total_steps}: mean valid loss {float(np.mean(losses)):.3f}",
              file=stream, flush=True)

    results, finals = prober.measure(params, progress=progress)
    out = {"init_from": os.path.abspath(config.init_from), "step": int(step), "results": results,
           "total_steps": int(config.total_steps), "seeds": int(config.seeds),
           "confidence": float(config.confidence), "token_budgets": [int(b) for b in config.token_budgets]}
    if config.save_embeddings:
      out["embeddings"] = save_embeddings(params, finals, languages, info, workdir)
    write_json_atomic(os.path.join(workdir, "probe.json"), out)
    rworkdir.write_config(workdir, config)
    write_report(out, workdir)
    rworkdir.write_summary(workdir, {"step": int(step), "finished": True,
                                     "final_loss": {l: {b: r["final_loss"]["mean"] for b, r in per.items()}
                                                    for l, per in results.items()}})
  return out


def save_embeddings(params: Any, finals: dict, languages: list[Language], info: dict, workdir: str) -> dict:
  """Writes each table as a language-adapted workdir (body + new embedding + tokenizer) for `assemble`."""
  host = jax.device_get(params)
  family = registry.family_of(info.get("architecture", registry.MLM))
  by_name = {l.name: l for l in languages}
  written = {}
  for t, table in finals.items():
    out = os.path.join(workdir, "embeddings", f"{t.language}_b{t.budget}_s{t.seed}")
    p = with_table(family, host, table)
    lang = by_name[t.language]
    rworkdir.copy_tokenizer(lang.tokenizer_path, out)
    rworkdir.write_model_info(out, {**info, "architecture": family.lm, "vocab_size": int(table["input"].shape[0]),
                                    "pad_token_id": lang.specials.pad})
    rworkdir.write_params(out, p, note={"probe_table": dataclasses.asdict(t)})
    rworkdir.write_summary(out, {"finished": True, "probe_table": dataclasses.asdict(t)})
    written[f"{t.language}/{t.budget}/{t.seed}"] = out
  return written
