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
import time
from typing import Any

import jax
import numpy as np

from rewire import config as rconfig
from rewire import sharding
from rewire import workdir as rworkdir
from rewire.workdir import load_params
from rewire.fileio import write_json_atomic
from rewire.models import registry
from rewire.probe.languages import Language, prepare_languages
from rewire.probe.prober import Prober, check_mlm_source
from rewire.probe.report import write_report
from rewire.probe.stacked import with_table
from rewire.telemetry import hms

PROGRESS_EVERY_S = 30.0  # the longest silence between two progress lines (as the study driver's)


def run(config, workdir: str, *, log_stream=None, clock=time.perf_counter) -> dict:
  """The `probe` stage: probes `config.init_from` and writes probe.json, probe.md and probe.png."""
  rconfig.validate(config)
  info = check_mlm_source(config.init_from)
  params, step = load_params(config.init_from, config.init_step or None)
  mesh = sharding.make_mesh(config.mesh)
  stream = log_stream or sys.stdout
  with rworkdir.locked(workdir):
    languages = prepare_languages(config, os.path.join(workdir, "languages"), log_stream=log_stream)
    prober = Prober(config, languages, info, mesh, source=config.init_from)
    starts = f" x {len(prober.inits)} starts" if len(prober.inits) > 1 else ""
    print(f"[probe] {config.init_from} at step {step}: {len(prober.tables)} tables "
          f"({len(languages)} languages x {len(config.token_budgets)} budgets{starts} x {config.seeds} seeds), "
          f"{config.total_steps} updates, dropout {prober.dropout['dropout']:g} "
          f"(attention {prober.dropout['attention_dropout']:g})", file=stream, flush=True)
    lines, notes = prober.start_lines()
    for note in notes:
      print(f"rewire: {note}", file=sys.stderr, flush=True)
    for line in lines:
      print(f"[probe] {line}", file=stream, flush=True)
    lines = ProbeProgress(int(config.total_steps) * len(prober.groups), stream=stream, clock=clock)

    def evaluated(s, losses):
      if s % max(int(config.eval_every), int(config.total_steps) // 10) == 0 or s == config.total_steps:
        lines.evaluated(losses)

    results, finals = prober.measure(params, progress=evaluated, on_update=lines.updated)
    out = {"init_from": os.path.abspath(config.init_from), "step": int(step), "results": results,
           "total_steps": int(config.total_steps), "seeds": int(config.seeds),
           "confidence": float(config.confidence), "token_budgets": [int(b) for b in config.token_budgets],
           "inits": list(prober.inits), "model": prober.dropout}
    if config.save_embeddings:
      out["embeddings"] = save_embeddings(params, finals, languages, info, workdir, curve=prober.curve)
    write_json_atomic(os.path.join(workdir, "probe.json"), out)
    rworkdir.write_config(workdir, config)
    write_report(out, workdir)
    rworkdir.write_summary(workdir, {"step": int(step), "finished": True,
                                     "final_loss": {l: {b: r["final_loss"]["mean"] for b, r in per.items()}
                                                    for l, per in results.items()}})
  return out


class ProbeProgress:
  """The probe's progress lines: at evaluations, and between them at least every PROGRESS_EVERY_S.

  On a loaded machine one evaluation can be many minutes from the next. `updated` runs after every update:
  it waits for the update before it, so the host stays one update ahead of the device (which always has
  the next one queued) and the count and the clock describe work done, not work queued; then it reads the
  clock, and prints only when a line is due.
  """

  def __init__(self, total: int, *, stream, clock=time.perf_counter, every_s: float = PROGRESS_EVERY_S):
    self.total, self.stream, self.clock, self.every_s = total, stream, clock, every_s
    self.done, self.queued = 0, None
    self.t0 = self.last = clock()
    self.first: tuple[int, float] | None = None  # (updates, time) after the first: no compile in the ETA

  def updated(self, losses=None) -> None:
    if self.queued is not None:
      jax.block_until_ready(self.queued)
    self.queued, self.done = losses, self.done + 1
    now = self.clock()
    if self.first is None:
      self.first = (self.done, now)
    if now - self.last >= self.every_s:
      self.line(now)

  def evaluated(self, losses) -> None:
    self.line(self.clock(), f"mean valid loss {float(np.mean(losses)):.3f}")

  def line(self, now: float, what: str = "") -> None:
    parts = [f"[probe] update {self.done}/{self.total}" + (f": {what}" if what else ""),
             f"elapsed {hms(now - self.t0)}"]
    if self.first is not None and self.done > self.first[0]:
      rate = (now - self.first[1]) / (self.done - self.first[0])
      parts.append(f"ETA {hms(rate * (self.total - self.done))}")
    print(" | ".join(parts), file=self.stream, flush=True)
    self.last = now


def save_embeddings(params: Any, finals: dict, languages: list[Language], info: dict, workdir: str, *,
                    curve) -> dict:
  """Writes each table as a language-adapted workdir (body + new embedding + tokenizer) for `assemble`;
  `curve(table)` names its curve (language, or language/start)."""
  host = jax.device_get(params)
  family = registry.info_family(info)
  by_name = {l.name: l for l in languages}
  written = {}
  for t, table in finals.items():
    out = os.path.join(workdir, "embeddings", f"{curve(t).replace('/', '_')}_b{t.budget}_s{t.seed}")
    p = with_table(family, host, table)
    lang = by_name[t.language]
    rworkdir.copy_tokenizer(lang.tokenizer_path, out)
    rworkdir.write_model_info(out, {**info, "architecture": family.lm, "vocab_size": int(table["input"].shape[0]),
                                    "pad_token_id": lang.specials.pad})
    rworkdir.write_params(out, p, note={"probe_table": dataclasses.asdict(t)})
    rworkdir.write_summary(out, {"finished": True, "probe_table": dataclasses.asdict(t)})
    written[f"{curve(t)}/{t.budget}/{t.seed}"] = out
  return written
