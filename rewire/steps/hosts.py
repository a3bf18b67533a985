"""A step of several hosts: one Ray task per host, joined into one JAX job by `jax.distributed`.

Elsewhere than on TPU, the step's hosts are the bundles of a placement group, one bundle per node
(STRICT_SPREAD), each holding the step's per-host resources. A small task in the first bundle finds that
node's address and a free port: the job's coordinator, which task 0 (process 0) then hosts.

On a TPU pod, as Levanter does it, the step first claims a whole slice through the slice's head resource
(`TPU-<type>-head`, e.g. `TPU-v4-16-head`, which only worker 0 of each slice of that type has); that task
reads the slice's name and host count, and one task per host then asks for the slice's own resource (its
name) and its TPU chips. JAX finds the coordinator from the TPU metadata itself.

If one task dies, the driver cancels the others, and the step is retried as a whole
(`rewire.steps.engine`): it resumes from its newest sealed checkpoint.
"""

from __future__ import annotations

import dataclasses
import socket


def _free_port() -> tuple[str, int]:
  import ray
  with socket.socket() as s:
    s.bind(("", 0))
    port = s.getsockname()[1]
  return ray.util.get_node_ip_address(), port


def _slice_of_this_host() -> tuple[str, int, int]:
  from ray.util.accelerators import tpu
  return tpu.get_current_pod_name(), int(tpu.get_current_pod_worker_count()), int(tpu.get_num_tpu_chips_on_node())


@dataclasses.dataclass
class Launched:
  refs: list          # one ObjectRef per host, in process order
  group: object       # the placement group to remove afterwards (None on TPU)


def launch(remote, spec: dict, *, hosts: int, resources: dict, options: dict, tpu_slice: str = "",
           timeout_s: float = 300) -> Launched:
  """Starts the step's tasks (`remote`: the Ray remote function running `worker.run_step`)."""
  import ray
  from ray.util.placement_group import placement_group
  from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
  if tpu_slice:
    head = ray.remote(_slice_of_this_host).options(num_cpus=0, resources={f"TPU-{tpu_slice}-head": 1})
    name, count, chips = ray.get(head.remote(), timeout=timeout_s)
    refs = [remote.options(**options, resources={name: 1, "TPU": chips}).remote(
        dict(spec, distributed={"process_id": i, "num_processes": count})) for i in range(count)]
    return Launched(refs, None)
  bundle = {k: v for k, v in resources.items() if v}
  group = placement_group([bundle] * hosts, strategy="STRICT_SPREAD", name=spec["name"])
  ready, _ = ray.wait([group.ready()], timeout=timeout_s)
  if not ready:
    ray.util.remove_placement_group(group)
    raise TimeoutError(f"no {hosts} nodes could each give {bundle} within {timeout_s:.0f} s")
  at = lambda i: PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i)
  host, port = ray.get(ray.remote(_free_port).options(num_cpus=0, scheduling_strategy=at(0)).remote())
  refs = []
  for i in range(hosts):
    share = dict(spec, distributed={"coordinator": f"{host}:{port}", "num_processes": hosts, "process_id": i})
    refs.append(remote.options(**options, scheduling_strategy=at(i)).remote(share))
  return Launched(refs, group)


def release(launched: Launched) -> None:
  """Cancels the step's tasks still running (never a finished one) and frees its placement group."""
  import ray
  _, unfinished = ray.wait(launched.refs, num_returns=len(launched.refs), timeout=0)
  for ref in unfinished:
    ray.cancel(ref, force=True)
  if launched.group is not None:
    ray.util.remove_placement_group(launched.group)
