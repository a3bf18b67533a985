"""Training and evaluation batches from a prepared corpus, read with grain.

The order of the data is global: record `k` of the stream is `MapDataset.range(N).shuffle(seed)[k]`
(grain's index shuffle, a new permutation each epoch), and global batch `b` is stream records
`b*B .. (b+1)*B - 1`. Each process reads only its contiguous share of each global batch (rows
`p*local .. (p+1)*local - 1`), which the loop assembles into one global array
(`jax.make_array_from_process_local_data`).

In grain's terms: a sampler walks the global batch numbers 0, 1, 2, ... on every host (it is not
sharded), and the data source maps batch `b` to this host's rows, read from the `ArrayRecordDataSource`
of the shards. The iterator's state is therefore grain's own state -- the last global batch read -- which
holds no host index or host count: a run checkpointed on 8 hosts resumes on 2 with the same global
batches. Neither sampler nor source names the process in its `repr`, which grain uses to validate a
restored state. A prefix of the records (`num_records`) gives the token-budgeted stream of language
adaptation. The same iterator serves a prepared corpus (`corpus_batches`) and in-memory task features
(`array_batches`, fine-tuning).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from rewire.data.corpus import Prepared
from rewire.data.tokenizer import load_tokenizer, special_ids
from rewire.errors import UserError

_SEED_SPREAD = 0x9E3779B1  # Spreads run seeds over grain's 32-bit seed space (its epochs use seed + epoch).


def check_share(batch_size: int, process_index: int, process_count: int) -> int:
  """This process's rows per global batch; UserError unless the batch splits evenly over processes."""
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise UserError(f"batch size must be a positive integer, got {batch_size!r}")
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"bad process_index={process_index} for process_count={process_count}")
  if batch_size % process_count:
    raise UserError(f"global batch size {batch_size} is not divisible by the number of processes "
                    f"{process_count}")
  return int(batch_size) // process_count


class _GlobalBatchNumbers:
  """grain sampler: index i -> global batch i, endlessly, the same on every host."""

  def __len__(self) -> int:
    return sys.maxsize

  def __getitem__(self, index: int):
    import grain
    return grain.RecordMetadata(index=index, record_key=index)

  def __repr__(self) -> str:
    return "GlobalBatchNumbers()"


class _HostShares:
  """grain data source: global batch b -> this host's rows of it, as `fetch(record_keys)` returns them."""

  def __init__(self, fetch: Callable[[list[int]], Any], num_records: int, global_batch: int, seed: int,
               process_index: int, process_count: int, identity: str):
    import grain
    self._fetch = fetch
    self._order = grain.MapDataset.range(num_records).shuffle(seed=(seed * _SEED_SPREAD) % 2**32)
    self._global = global_batch
    self._local = global_batch // process_count
    self._offset = process_index * self._local
    self._desc = f"HostShares(source={identity}, records={num_records}, global_batch={global_batch}, seed={seed})"

  def __len__(self) -> int:
    return sys.maxsize

  def __getitem__(self, batch: int) -> Any:
    start = int(batch) * self._global + self._offset
    return self._fetch([int(k) for k in self._order._getitems(list(range(start, start + self._local)))])

  def __repr__(self) -> str:
    return self._desc


class Batches:
  """Endless iterator of this process's share `[global_batch // process_count, ...]` of each global batch.

  `fetch(record_keys)` reads the rows of the given records; `identity` names the data in the state, so
  a state saved over other data is refused.
  """

  def __init__(self, fetch: Callable[[list[int]], Any], num_records: int, global_batch_size: int, seed: int, *,
               identity: str, process_index: int = 0, process_count: int = 1, prefetch: int = 4):
    import grain
    check_share(global_batch_size, process_index, process_count)
    if num_records < global_batch_size:
      raise UserError(f"the training data has {num_records} sequences, fewer than one global batch "
                      f"of {global_batch_size}; use more text or a smaller batch")
    self.num_records, self.global_batch_size, self.seed = int(num_records), int(global_batch_size), int(seed)
    self.identity = identity
    self._loader = grain.DataLoader(
        data_source=_HostShares(fetch, self.num_records, self.global_batch_size, self.seed, process_index,
                                process_count, identity),
        sampler=_GlobalBatchNumbers(), worker_count=0, shard_options=grain.sharding.NoSharding(),
        read_options=grain.ReadOptions(num_threads=2, prefetch_buffer_size=prefetch))
    self._it = iter(self._loader)

  def __iter__(self) -> Batches:
    return self

  def __next__(self) -> Any:
    return next(self._it)

  def get_state(self) -> dict:
    """grain's iterator state plus what identifies the stream; JSON-serialisable, host-independent."""
    return {"grain": json.loads(self._it.get_state().decode()), "seed": self.seed,
            "num_records": self.num_records, "global_batch_size": self.global_batch_size,
            "corpus": self.identity}

  def set_state(self, state: dict) -> None:
    """Restores a `get_state()` dict: the next batch is the one the saved iterator would have given."""
    if not isinstance(state, dict) or "grain" not in state:
      raise UserError(f"bad data-iterator state {state!r}: not saved by this version of rewire")
    mine = self.get_state()
    for key in ("seed", "num_records", "global_batch_size", "corpus"):
      if state.get(key) != mine[key]:
        raise UserError(f"cannot resume the data iterator: saved {key}={state.get(key)} but this run has "
                        f"{mine[key]} (the data, seed or batch size changed since the checkpoint)")
    self._it = iter(self._loader)
    self._it.set_state(json.dumps(state["grain"]).encode())

  @property
  def batches_read(self) -> int:
    """Global batches handed out so far (grain's last seen index + 1)."""
    return int(self.get_state()["grain"]["last_seen_indices"]["0"]) + 1


def corpus_batches(prepared: Prepared, global_batch_size: int, seed: int, *, num_records: int | None = None,
                   process_index: int = 0, process_count: int = 1) -> Batches:
  """Batches of packed sequences (int32 `[local, seq_len]`) from a prepared corpus's train shards.

  `num_records` < all: a prefix of the records (a token budget).
  """
  total = prepared.num_sequences("train")
  n = total if num_records is None else int(num_records)
  if not 0 < n <= total:
    raise ValueError(f"num_records={num_records} outside 1..{total}")
  records = prepared.source("train")
  return Batches(lambda keys: prepared.decode(records.__getitems__(keys)), n, global_batch_size, seed,
                 identity=prepared.fingerprint, process_index=process_index, process_count=process_count)


def array_batches(arrays: Mapping[str, np.ndarray], global_batch_size: int, seed: int, *, identity: str,
                  process_index: int = 0, process_count: int = 1) -> Batches:
  """Batches of in-memory feature arrays (a dict of `[local, ...]` arrays per batch), e.g. task features."""
  n = len(next(iter(arrays.values())))
  return Batches(lambda keys: {k: v[keys] for k, v in arrays.items()}, n, global_batch_size, seed,
                 identity=identity, process_index=process_index, process_count=process_count)


def budget_prefix(prepared: Prepared, token_budget: int, min_records: int, chunk: int = 4096) -> tuple[int, np.ndarray]:
  """The shortest prefix of the train records holding `token_budget` tokens (at least `min_records` long).

  Returns the prefix length and the prefix's unigram counts. Reads only the prefix.
  """
  ids = special_ids(load_tokenizer(prepared.tokenizer_path))
  total = prepared.num_sequences("train")
  counts = np.zeros(ids.vocab_size, np.int64)
  tokens, n = 0, 0
  while n < total and (tokens < token_budget or n < min_records):
    rows = prepared.read("train", n, n + chunk)
    cum = tokens + np.cumsum((rows != ids.pad).sum(axis=1))
    end = min(len(rows), int(np.searchsorted(cum, token_budget)) + 1)  # first row reaching the budget
    end = max(end, min(len(rows), min_records - n))
    counts += np.bincount(rows[:end].ravel(), minlength=ids.vocab_size)
    tokens, n = int(cum[end - 1]), n + end
  if tokens < token_budget:
    raise UserError(f"token_budget {token_budget} exceeds the {tokens} training tokens of {prepared.directory}")
  counts[ids.pad] = 0
  return n, counts


def eval_batches(sequences: np.ndarray, batch_size: int, pad_id: int, *, process_index: int = 0,
                 process_count: int = 1) -> Iterator[np.ndarray]:
  """Fixed-order batches covering `sequences` once, each `[batch_size // process_count, L]`.

  `batch_size` is global and the share of process `p` is rows `p*local:(p+1)*local` of each global batch.
  The last global batch is filled up with rows that are all `pad_id`: such rows contain no maskable token,
  so MLM masking gives them zero weight and they do not count in any loss or accuracy.
  """
  local = check_share(batch_size, process_index, process_count)
  n, length = sequences.shape
  for start in range(0, n, batch_size):
    batch = np.full((batch_size, length), pad_id, dtype=sequences.dtype)
    real = np.asarray(sequences[start:start + batch_size])
    batch[:len(real)] = real
    yield batch[process_index * local:(process_index + 1) * local]
