"""Where a graph runs: how it connects to Ray (here, or a cluster by address), and what the nodes offer.

`Settings` are the graph's run settings from a study or pipeline config; none of them enters a step's
hash. `connect` attaches this process to Ray once; `missing` names the resources that no node has, so a
step that no node can take is reported instead of waiting forever.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import warnings

from rewire.config import parse_pairs
from rewire.errors import UserError


def _amounts(text: str, what: str) -> dict[str, float]:
  """"CPU=1,GPU=2" -> {"CPU": 1.0, "GPU": 2.0} (`rewire.config.parse_pairs`, with numbers for values)."""
  out = {}
  for name, value in parse_pairs(text, what).items():
    try:
      out[name] = float(value)
    except ValueError:
      raise UserError(f"{what} entry {name}={value!r}: the amount must be a number") from None
  return out


def step_resources(config) -> tuple[dict[str, float], dict[str, float]]:
  """What every step asks for (`resources`), and each host of a pretraining step (`pretrain_resources`,
  else the same)."""
  resources = _amounts(config.resources, "resources")
  return resources, _amounts(config.pretrain_resources, "pretrain_resources") or resources


@dataclasses.dataclass
class Settings:
  """How a graph runs (none of it enters a step's hash)."""
  address: str = ""
  workers: int = 0
  max_retries: int = 3
  lease_s: float = 60.0
  schedule_timeout_s: float = 300.0
  env: dict = dataclasses.field(default_factory=dict)
  tpu_slice: str = ""
  rerun_failed: bool = False
  label: str = "study"

  @classmethod
  def from_config(cls, config, label: str) -> "Settings":
    return cls(address=str(config.ray_address), workers=int(config.workers), max_retries=int(config.max_retries),
               lease_s=float(config.lease_s), schedule_timeout_s=float(config.schedule_timeout_s),
               env=parse_pairs(config.step_env, "step_env"), tpu_slice=str(config.tpu_slice),
               rerun_failed=bool(config.rerun_failed), label=label)


_connected: dict = {}
REACH_TIMEOUT_S = 10.0


def connect(address: str = "", workers: int = 0) -> str:
  """Connects this process to Ray (once); returns what it is connected to, for the first progress line."""
  import ray
  address = address or os.environ.get("RAY_ADDRESS", "")
  if ray.is_initialized():
    if not address or _connected.get("address") == address:
      return _connected.get("what", "Ray")
    ray.shutdown()
  # Ray starts its own processes from this one, which has imported JAX: not a fork that runs JAX code.
  warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
  try:
    if address:
      _check_reachable(address)
      ray.init(address=address, log_to_driver=False, logging_level="ERROR")
      what = f"the Ray cluster at {address}"
    else:  # "local": a new Ray on this machine, never a stale one from /tmp/ray
      # Ray gives a new head 30 s to start its GCS; a machine busy with training can need more.
      os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")
      ray.init(address="local", num_cpus=workers or None, include_dashboard=False, log_to_driver=False,
               logging_level="ERROR")
      what = f"Ray on this machine ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"
  except (ConnectionError, RuntimeError, TimeoutError, ValueError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(f"cannot reach the Ray cluster at {address or 'this machine'}: {first[:300]} (start it with "
                    "`ray start --head`, or leave ray_address and RAY_ADDRESS empty to run here)") from None
  _connected.update(address=address, what=what)
  return what


def _check_reachable(address: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
  """Fails fast on an address nothing listens at (Ray itself retries such a connection for many minutes)."""
  if address in ("auto", "local"):
    return
  host, _, port = address.split("://", 1)[-1].rpartition(":")
  try:
    with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
      pass
  except ValueError:
    raise ConnectionError(f"{address!r} is not HOST:PORT") from None
  except OSError as e:
    raise ConnectionError(f"nothing answers at {host}:{port} within {timeout_s:.0f} s ({e.strerror or e})") from None


def missing(resources: dict, hosts_: int = 1) -> dict:
  """The resources no `hosts_` alive nodes each have: {name: (asked, most any node has)}; {} if they fit."""
  import ray
  nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
  fits = [n for n in nodes if all(n.get(k, 0) >= v for k, v in resources.items() if v)]
  if len(fits) >= hosts_:
    return {}
  return {k: (v, max((n.get(k, 0) for n in nodes), default=0)) for k, v in resources.items()
          if v and sum(n.get(k, 0) >= v for n in nodes) < hosts_} or {"nodes": (hosts_, len(fits))}
