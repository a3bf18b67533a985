"""The driver's progress line: steps run, steps running, elapsed time, and an ETA that counts down."""

from __future__ import annotations

from typing import Sequence

OVERRUN_DONE = 0.9  # a step still running is never taken to be more than this fraction done (see `eta`)


def eta(finished: Sequence[tuple[str, float]], pending: Sequence[str], running: Sequence[tuple[str, float]],
        workers: int) -> float | None:
  """Seconds until every step has run, or None while no step has finished (nothing to go on).

  `finished`: (kind, seconds) of the steps run so far; `pending`: the kinds of those not started;
  `running`: (kind, seconds so far) of those running. A step is expected to take the mean time of the
  finished steps of its kind, or of all finished steps if none of its kind has finished; a running step
  has that less its elapsed time left. No running step is taken to be more than OVERRUN_DONE done: one
  that outruns the expectation raises its kind's to elapsed / OVERRUN_DONE, so its remainder (and that
  of the pending steps of its kind) grows with it instead of sticking at 0. The work left is shared by
  `workers`, but takes at least as long as its longest step.
  """
  if not finished:
    return None
  by_kind: dict[str, list[float]] = {}
  for kind, t in finished:
    by_kind.setdefault(kind, []).append(t)
  overall = sum(t for _, t in finished) / len(finished)
  expected = {kind: sum(ts) / len(ts) for kind, ts in by_kind.items()}
  for kind, elapsed in running:
    expected[kind] = max(expected.get(kind, overall), elapsed / OVERRUN_DONE)
  left = [expected.get(kind, overall) for kind in pending] + [expected[kind] - elapsed for kind, elapsed in running]
  return max(sum(left) / max(1, workers), max(left, default=0.0))
