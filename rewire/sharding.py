"""Device mesh from the config, logical-axis rules, and the shardings of the train state and batches.

The model names the axes of its weights logically ("vocab", "embed", "heads", "mlp", ...); a rules table
maps those names onto the mesh axes ("data", "fsdp", "tensor"). The state is built abstractly with
`jax.eval_shape`, its shardings are derived from the rules, and `jit(init, out_shardings=...)` places it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from rewire.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, ...]:
  """Resolves `config.mesh.{data,fsdp,tensor}` (one of them may be -1, "the rest") against the devices."""
  sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
  if any(s == 0 or s < -1 for s in sizes):
    raise UserError(f"mesh sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
  if sizes.count(-1) > 1:
    raise UserError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise UserError(f"mesh {dict(zip(MESH_AXES, sizes))} does not divide the {num_devices} devices")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise UserError(f"mesh {dict(zip(MESH_AXES, sizes))} has {math.prod(sizes)} devices but "
                    f"{num_devices} are available")
  return tuple(sizes)


def make_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  # Random draws (init, masking, dropout, forgetting resets) must not depend on how arrays are sharded,
  # so that a run gives the same values on any mesh. Partitionable threefry guarantees that; it is JAX's
  # default, and a process that turned it off is told so rather than have it flipped behind its back.
  if not jax.config.jax_threefry_partitionable:
    raise UserError("rewire needs jax_threefry_partitionable=True (JAX's default): its random draws must not "
                    "depend on the mesh; something in this process set it to False")
  devices = list(devices) if devices is not None else jax.devices()
  shape = mesh_shape(mesh_cfg, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def rules_from_config(rules: Any) -> tuple[tuple[str, Any], ...]:
  """Validates a logical-rules table: every target must be a mesh axis (or a tuple of them, or None)."""
  out = []
  for entry in rules:
    if len(entry) != 2:
      raise UserError(f"sharding rule {tuple(entry)!r} is not a (logical_name, mesh_axes) pair")
    name, target = entry
    targets = () if target is None else ((target,) if isinstance(target, str) else tuple(target))
    for t in targets:
      if t not in MESH_AXES:
        raise UserError(f"sharding rule for {name!r} names unknown mesh axis {t!r}; known: {MESH_AXES}")
    out.append((name, None if target is None else (target if isinstance(target, str) else tuple(target))))
  return tuple(out)


def logical_shardings(boxed_abstract: Any, mesh: Mesh, rules) -> Any:
  """NamedShardings for a tree of `nn.LogicallyPartitioned` abstract values (leaves without names replicate)."""
  specs = nn.get_partition_spec(boxed_abstract)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(BATCH_AXES))


def stacked_batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches stacked along a leading axis (one per probe table): each table's batch split like a batch."""
  return NamedSharding(mesh, P(None, BATCH_AXES))


def num_batch_shards(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def global_batch(local: np.ndarray, mesh: Mesh) -> jax.Array:
  """Forms the global batch array from this process's rows (each host loads only its own share)."""
  sharding = batch_sharding(mesh)
  global_shape = (local.shape[0] * jax.process_count(),) + local.shape[1:]
  return jax.make_array_from_process_local_data(sharding, local, global_shape)


def opt_state_shardings(tx: Any, boxed_abstract_params: Any, mesh: Mesh, rules) -> Any:
  """Shardings of `tx.init(params)`: built on the boxed params, the optimizer state's moments carry their
  params' logical axis names (so Adam moments shard like their params) and everything else replicates."""
  return logical_shardings(jax.eval_shape(tx.init, boxed_abstract_params), mesh, rules)
