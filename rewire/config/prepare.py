"""The schema of corpus preparation (`configs/prepare.py`, `rewire.data.build`): the `data` group alone.

The workdir of a `prepare` run is the prepared corpus itself, which later runs read as `prepared:DIR`.
"""

from __future__ import annotations

import ml_collections

from rewire.config.groups import data_defaults


def prepare_defaults() -> ml_collections.ConfigDict:
  """Corpus preparation (`configs/prepare.py`): the workdir is the prepared directory itself."""
  c = ml_collections.ConfigDict()
  c.stage = "prepare"
  c.data = data_defaults()
  return c
