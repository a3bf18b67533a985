"""`probe_every`: plasticity during pretraining, probed from the run's own body every N updates.

The pretraining config's `probe` group is a probe recipe (`rewire.config.probe`); every `probe_every`
updates the current body is probed with it, the results are appended to `plasticity.jsonl` and
`plasticity.png` is redrawn with the resets marked. The probe reads the parameters and nothing else, so
the run's trajectory (and its bit-identical resume) does not depend on it; a resumed run skips the steps
already recorded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

from rewire import config as rconfig
from rewire.models import registry
from rewire.probe.languages import prepare_languages
from rewire.probe.prober import Prober
from rewire.probe.report import plot_plasticity, results_line
from rewire.telemetry import read_records


class DuringPretraining:
  """`probe_every`: probes a pretraining run's current body; appends to plasticity.jsonl, plots plasticity.png.

  The probe reads the parameters and nothing else, so the run's trajectory (and its bit-identical resume)
  does not depend on it; a resumed run skips the steps already recorded.
  """

  def __init__(self, config, workdir: str, model_config, mesh, *, is_main: bool, log_stream=None):
    self.cfg = rconfig.probe_during_pretraining(config)
    self.workdir, self.is_main, self.stream = workdir, is_main, log_stream or sys.stdout
    self.path = os.path.join(workdir, "plasticity.jsonl")
    languages = prepare_languages(self.cfg, os.path.join(workdir, "probe_data"), log_stream=log_stream)
    info = {"architecture": registry.family_for(model_config).lm, **dataclasses.asdict(model_config)}
    self.prober = Prober(self.cfg, languages, info, mesh, source=workdir)

  def __call__(self, step: int, state) -> None:
    records = read_records(self.path)
    if any(r.get("step") == step for r in records):
      return
    results, _ = self.prober.measure(state["params"])
    if not self.is_main:
      return
    records.append({"step": int(step), "results": results})
    with open(self.path, "a") as f:
      f.write(json.dumps(records[-1]) + "\n")
    print(f"[probe] at update {step}: final probe loss {results_line(results)}", file=self.stream, flush=True)
    resets = [r["step"] for r in read_records(os.path.join(self.workdir, "metrics.jsonl"))
              if r.get("event") == "forget"]
    plot_plasticity(records, os.path.join(self.workdir, "plasticity.png"), resets=resets)
