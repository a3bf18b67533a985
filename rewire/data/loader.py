"""Deterministic, checkpointable batches over packed sequences, split into per-host shares.

The order of the data is a pure function of (seed, epoch, position): epoch `e` visits the rows in the
order `np.random.default_rng([seed, e]).permutation(N)`, taken `global_batch_size` at a time, and drops
an incomplete last batch. The iterator's whole state is therefore two integers, saved beside each
checkpoint, and a resumed run sees exactly the batches an uninterrupted run would have seen. Because
the state is about the *global* batch, it also restores onto a different number of hosts.

Each host reads only its contiguous share of the global batch (rows `p*local:(p+1)*local` for process
`p`), which the train loop assembles into one global array (e.g. with
`jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from rewire.errors import UserError


def _check_share(batch_size: int, process_index: int, process_count: int) -> int:
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise UserError(f"batch size must be a positive integer, got {batch_size!r}")
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"bad process_index={process_index} for process_count={process_count}")
  if batch_size % process_count:
    raise UserError(f"global batch size {batch_size} is not divisible by the number of processes "
                    f"{process_count}")
  return int(batch_size) // process_count


class BatchIterator:
  """Endless iterator of this process's share `[global_batch_size // process_count, L]` of each batch."""

  def __init__(self, sequences: np.ndarray, global_batch_size: int, seed: int, *,
               process_index: int = 0, process_count: int = 1):
    if sequences.ndim != 2:
      raise ValueError(f"sequences must be (N, L), got shape {sequences.shape}")
    self._local = _check_share(global_batch_size, process_index, process_count)
    if len(sequences) < global_batch_size:
      raise UserError(f"the training data has {len(sequences)} sequences, fewer than one global batch "
                      f"of {global_batch_size}; use more text or a smaller batch")
    self._sequences = sequences
    self._global = int(global_batch_size)
    self._seed = int(seed)
    self._offset = process_index * self._local
    self._epoch = 0
    self._position = 0
    self._perm_epoch = -1
    self._perm = np.empty(0, np.int64)

  @property
  def batches_per_epoch(self) -> int:
    return len(self._sequences) // self._global

  @property
  def epoch(self) -> int:
    return self._epoch

  def __iter__(self) -> BatchIterator:
    return self

  def __next__(self) -> np.ndarray:
    if self._position >= self.batches_per_epoch:
      self._epoch += 1
      self._position = 0
    start = self._position * self._global + self._offset
    rows = self._permutation(self._epoch)[start:start + self._local]
    self._position += 1
    return np.asarray(self._sequences[rows])

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch != self._perm_epoch:
      self._perm = np.random.default_rng([self._seed, epoch]).permutation(len(self._sequences))
      self._perm_epoch = epoch
    return self._perm

  def get_state(self) -> dict[str, int]:
    """The position in the data stream, as JSON-serialisable ints (plus sizes checked on restore)."""
    return {"epoch": self._epoch, "position": self._position, "seed": self._seed,
            "num_sequences": len(self._sequences), "global_batch_size": self._global}

  def set_state(self, state: dict[str, int]) -> None:
    """Restores a `get_state()` dict; the next batch is the one the saved iterator would have given."""
    try:
      epoch, position = int(state["epoch"]), int(state["position"])
    except (KeyError, TypeError, ValueError) as e:
      raise UserError(f"bad data-iterator state {state!r}: needs integer 'epoch' and 'position'") from e
    mine = self.get_state()
    for key in ("seed", "num_sequences", "global_batch_size"):
      if key in state and int(state[key]) != mine[key]:
        raise UserError(f"cannot resume the data iterator: saved {key}={state[key]} but this run has "
                        f"{mine[key]} (the data, seed or batch size changed since the checkpoint)")
    if epoch < 0 or not 0 <= position <= self.batches_per_epoch:
      raise UserError(f"bad data-iterator state {state!r}: position outside 0..{self.batches_per_epoch}")
    self._epoch, self._position = epoch, position


def eval_batches(sequences: np.ndarray, batch_size: int, pad_id: int, *, process_index: int = 0,
                 process_count: int = 1) -> Iterator[np.ndarray]:
  """Fixed-order batches covering `sequences` once, each `[batch_size // process_count, L]`.

  `batch_size` is global and the share of process `p` is rows `p*local:(p+1)*local` of each global
  batch, as for `BatchIterator`. The last global batch is filled up with rows that are all `pad_id`:
  such rows contain no maskable token, so MLM masking gives them zero weight and they do not count in
  any loss or accuracy. `num_eval_batches` says how many batches there are.
  """
  local = _check_share(batch_size, process_index, process_count)
  n, length = sequences.shape
  for start in range(0, n, batch_size):
    batch = np.full((batch_size, length), pad_id, dtype=sequences.dtype)
    real = np.asarray(sequences[start:start + batch_size])
    batch[:len(real)] = real
    yield batch[process_index * local:(process_index + 1) * local]


def num_eval_batches(num_sequences: int, batch_size: int) -> int:
  """How many batches `eval_batches` yields for `num_sequences` rows."""
  return -(-num_sequences // batch_size)
