"""Sharding: meshes, logical rules, per-device memory, and restoring a checkpoint onto another mesh."""

import json
import math
import os

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from rewire import optim, sharding
from rewire.data.tokenizer import SpecialIds
from rewire.errors import UserError
from rewire.telemetry import read_records
from rewire.stages.pretrain_setup import Setup

from conftest import TOTAL, losses, run_tiny, tiny_config


def test_mesh_shape_resolution_and_errors():
  c = tiny_config().mesh
  c.update(data=-1, fsdp=2, tensor=2)
  assert sharding.mesh_shape(c, 8) == (2, 2, 2)
  c.update(data=3, fsdp=1, tensor=1)
  with pytest.raises(UserError, match="has 3 devices but 8 are available"):
    sharding.mesh_shape(c, 8)
  c.update(data=-1, fsdp=3, tensor=1)
  with pytest.raises(UserError, match="does not divide the 8 devices"):
    sharding.mesh_shape(c, 8)
  with pytest.raises(UserError, match="unknown mesh axis 'model'"):
    sharding.rules_from_config((("embed", "model"),))


def test_batch_must_divide_the_data_shards(tmp_path):
  c = tiny_config(mesh=(4, 2, 1))
  c.batch_size = 12
  with pytest.raises(UserError, match="batch_size 12 is not divisible by the 8 data shards"):
    run_tiny(c, tmp_path)
  assert not os.listdir(tmp_path)


def _per_device_bytes(state):
  return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(state))


def _predicted_bytes(state, mesh):
  total = 0
  for x in jax.tree.leaves(state):
    axes = [a for entry in x.sharding.spec if entry for a in ((entry,) if isinstance(entry, str) else entry)]
    total += x.nbytes // math.prod(mesh.shape[a] for a in axes)
  return total


def test_per_device_state_bytes_fall_with_fsdp_and_tensor():
  specials = SpecialIds.layout(256)
  sizes = {}
  for shape in [(8, 1, 1), (2, 2, 2), (1, 4, 2)]:
    c = tiny_config(mesh=shape)
    mesh = sharding.make_mesh(c.mesh)
    state = Setup(c, mesh, specials).init()
    sizes[shape] = _per_device_bytes(state)
    assert sizes[shape] == _predicted_bytes(state, mesh)
    emb = state["params"]["roberta"]["embeddings"]["word_embeddings"]["embedding"]
    assert emb.sharding.spec == P("tensor", "fsdp")
  full = sizes[(8, 1, 1)]
  assert full > sizes[(2, 2, 2)] > sizes[(1, 4, 2)]
  # The big matrices shard 4 and 8 ways; vectors shard over one axis only, scalars not at all.
  assert sizes[(2, 2, 2)] < full / 3 and sizes[(1, 4, 2)] < full / 5


def test_a_mesh_gives_the_same_loss_trajectory_as_one_device(tiny_runs):
  """data x fsdp x tensor = 2 x 2 x 2. (The mesh 1 x 4 x 2, then 1 x 2 x 2 on 4 devices, is checked against
  the same reference in the restore test below.)"""
  ref_dir, _ = tiny_runs("one_device")
  ref, got = losses(ref_dir), losses(tiny_runs("mesh_2_2_2")[0])
  assert [s for s, _ in got] == [s for s, _ in ref] == list(range(1, TOTAL + 1))
  np.testing.assert_allclose([x for _, x in got], [x for _, x in ref], rtol=2e-4)


def test_resets_keep_the_shardings(tiny_runs):
  _, summary = tiny_runs("mesh_2_2_2")
  assert summary["resets"] == [4, 8]
  emb = summary["state"]["params"]["roberta"]["embeddings"]["word_embeddings"]["embedding"]
  # ("vocab", "embed") -> ("tensor", "fsdp"): after two resets the embedding is still sharded by the rules.
  assert emb.sharding.spec == P("tensor", "fsdp")
  assert emb.addressable_shards[0].data.shape == (emb.shape[0] // 2, emb.shape[1] // 2)
  mu = optim.group_state(summary["state"]["opt_state"], "forget")[0].mu
  assert mu["roberta"]["embeddings"]["word_embeddings"]["embedding"].sharding.spec == P("tensor", "fsdp")


def test_checkpoint_restores_onto_another_mesh_and_continues(tiny_runs, tmp_path, capsys):
  """Updates 1..6 on the mesh 1 x 4 x 2, resumed on 1 x 2 x 2 over 4 devices: the losses and the params
  are those of the 2 x 2 x 2 run."""
  ref_dir, full = tiny_runs("mesh_2_2_2")
  run_tiny(tiny_config(mesh=(1, 4, 2)), tmp_path, stop_after=6)
  # Resume the same run on a different mesh and a different device count: announced in one line, recorded.
  capsys.readouterr()
  resumed = run_tiny(tiny_config(mesh=(1, 2, 2)), tmp_path, devices=jax.devices()[:4])
  lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("rewire: resuming")]
  assert len(lines) == 1 and "on 4 devices in 1 process(es)" in lines[0] and "saved on 8 devices" in lines[0]
  history = [json.loads(l) for l in open(tmp_path / "config_history.jsonl")]
  assert history[-1]["resumed_at_step"] == 6
  assert [x["devices"] for x in history[-1]["changed"]["layout"]] == [8, 4]
  emb = resumed["state"]["params"]["roberta"]["embeddings"]["word_embeddings"]["embedding"]
  assert len(emb.sharding.device_set) == 4
  np.testing.assert_allclose([x for _, x in losses(tmp_path)], [x for _, x in losses(ref_dir)], rtol=2e-4)
  for a, b in zip(jax.tree.leaves(jax.device_get(full["state"]["params"])),
                  jax.tree.leaves(jax.device_get(resumed["state"]["params"]))):
    np.testing.assert_allclose(a, b, atol=2e-5)
  events = [r["step"] for r in read_records(str(tmp_path / "metrics.jsonl")) if r.get("event") == "forget"]
  assert events == [4, 8]
