"""Statistics of adaptation curves: confidence bands over seeds, updates to a target loss, area under the curve.

A probe (`rewire.probe.stage`) trains fresh token embeddings on a frozen body and records validation loss at
fixed updates. These functions turn a set of such curves (one per seed) into the numbers a plasticity
comparison needs, and `bootstrap` gives an interval of any statistic over seeds (the study's relative
gain, `rewire.study.statistics`); they are plain NumPy, so known-answer tests pin them down.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict:
  """Mean and the Student-t confidence interval of the mean (the half-width is 0 for a single value).

  NaN values (e.g. a seed that never reached a target) are left out; `n` says how many were used.
  """
  x = np.asarray([v for v in values if v is not None and not math.isnan(v)], np.float64)
  if x.size == 0:
    return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "half_width": float("nan"), "n": 0}
  mean = float(x.mean())
  half = 0.0
  if x.size > 1:
    half = float(_t_quantile(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
  return {"mean": mean, "low": mean - half, "high": mean + half, "half_width": half, "n": int(x.size)}


@functools.lru_cache(maxsize=None)
def _t_quantile(q: float, dof: int) -> float:
  """Student's t quantile, computed once per (q, dof): a band asks it for every point of its curves."""
  from scipy import stats  # here, not at the top: scipy.stats takes seconds to import, and few runs need it
  return float(stats.t.ppf(q, dof))


def band(curves: np.ndarray, level: float = 0.95) -> dict:
  """Pointwise mean and t-interval of `curves` `[seeds, points]`: lists `mean`, `low`, `high`."""
  curves = np.asarray(curves, np.float64)
  per = [mean_ci(curves[:, j], level) for j in range(curves.shape[1])]
  return {k: [p[k] for p in per] for k in ("mean", "low", "high")}


def updates_to_target(steps: Sequence[float], losses: Sequence[float], target: float) -> float:
  """The first update at which the curve reaches `target`, interpolated linearly between evaluations.

  NaN if the curve never gets to `target`; `steps[0]` if it starts there.
  """
  s, l = np.asarray(steps, np.float64), np.asarray(losses, np.float64)
  hit = np.nonzero(l <= target)[0]
  if hit.size == 0:
    return float("nan")
  j = int(hit[0])
  if j == 0:
    return float(s[0])
  frac = (l[j - 1] - target) / (l[j - 1] - l[j])
  return float(s[j - 1] + frac * (s[j] - s[j - 1]))


def area_under_curve(steps: Sequence[float], losses: Sequence[float]) -> float:
  """The curve's trapezoid area divided by its span of updates: its mean loss over the run, in nats.

  Lower means the embeddings got good sooner (and stayed good).
  """
  s, l = np.asarray(steps, np.float64), np.asarray(losses, np.float64)
  span = s[-1] - s[0]
  if span <= 0:
    return float(l[-1])
  return float(np.sum((l[1:] + l[:-1]) / 2 * np.diff(s)) / span)


def bootstrap(statistic: Callable[[dict], np.ndarray], samples_by_group: Mapping[str, Any], *, resamples: int,
              seed: int = 0, level: float = 0.95) -> dict:
  """Percentile seed-bootstrap interval of `statistic`, each group's seeds resampled independently.

  `samples_by_group`: {group: array-like [..., seeds]}; the last axis is the seeds (groups may have
  different numbers of them), and a resample draws whole seeds, the same ones along the other axes.
  `statistic` is vectorised over resamples: it takes {group: float64 array [resamples, ..., seeds]} and
  gives an array [resamples]; it is called once on the samples themselves (`estimate`, a leading axis of 1)
  and once on all `resamples` resamples at once (each group's draws, in the order of the groups, from
  `default_rng(seed)`). Returns {"estimate", "low", "high", "resamples"}; the interval is at `level`.
  """
  rng = np.random.default_rng(seed)
  arrays = {g: np.asarray(x, np.float64) for g, x in samples_by_group.items()}
  estimate = float(np.asarray(statistic({g: x[None] for g, x in arrays.items()})).reshape(-1)[0])
  drawn = {}
  for g, x in arrays.items():
    seeds = x.shape[-1]
    picks = rng.integers(0, seeds, (resamples, seeds))                   # [resamples, seeds]
    drawn[g] = np.moveaxis(x[..., picks], -2, 0)                          # [resamples, ..., seeds]
  draws = np.asarray(statistic(drawn), np.float64).reshape(resamples)
  lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
  return {"estimate": estimate, "low": float(lo), "high": float(hi), "resamples": int(resamples)}


def summarize(steps: Sequence[int], curves: np.ndarray, target: float, level: float = 0.95) -> dict:
  """Everything a probe reports for one language and budget, from its per-seed curves `[seeds, points]`."""
  curves = np.asarray(curves, np.float64)
  reach = [updates_to_target(steps, c, target) for c in curves]
  return {
      "steps": [int(s) for s in steps],
      "curve": band(curves, level),
      "final_loss": mean_ci(curves[:, -1], level),
      "auc": mean_ci([area_under_curve(steps, c) for c in curves], level),
      "target_loss": float(target),
      "updates_to_target": mean_ci(reach, level),
      "reached_target": int(sum(not math.isnan(r) for r in reach)),
      "seeds": int(curves.shape[0]),
      "per_seed": {"final_loss": curves[:, -1].tolist(), "updates_to_target": reach,
                   "curves": curves.tolist()},
  }
