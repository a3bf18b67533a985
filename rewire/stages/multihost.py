"""A stage run as one process of a multi-process job: joining the job, and stopping when a peer dies.

A multi-host run (a TPU pod slice, a GPU cluster, or several processes on one machine with
`launch/local_multiprocess.sh`) is one JAX job: `join_job` makes this process part of it before any device
is touched, after which every process sees all global devices and collectives span them (gloo on CPU).

A process that dies (killed, out of memory, a lost host) would leave the others blocked in a collective
until JAX's heartbeat timeout aborts them with a C++ stack trace. `PeerWatch` notices at once instead:
every process keeps a TCP connection to process 0 (its address is published through the job's key-value
store), so when any process dies the kernel closes its connection; process 0 then stops, which closes the
connections of all the others, and each survivor prints one line and exits with status 1. A process that
finishes says goodbye first, so its ordinary exit is not taken for a death.

A process that stops with an error sends its error line instead. An error that every process meets at
the same step (a divergence) stops them all on their own; one that only this process met (its disk
filled during a save) leaves the others waiting for it in a collective or a save's barrier. So a process
told of a peer's error stops with that line if it has not stopped by itself within the job's heartbeat
timeout (`--heartbeat_timeout`, 30 s by default).
The failed process meets the others at an exit barrier (`leave_after_error`); when they do not come, it
exits without JAX's shutdown barrier, which would wait for processes that are gone.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from typing import Any, Mapping

import jax

from rewire.errors import UserError

LOST_PEER_EXIT = 1
_BYE = b"bye"
_ERR = b"err "  # the sender stopped with this error line
_GONE = b"gone "  # process 0 stops now, because of this peer's error line
_LET_GO_S = 5.0  # how long process 0 waits for the others to exit before it does (it hosts the job)
_KEY = "rewire/peer_watch"

# A process of the job that stops answering is declared dead after this long; the others then stop too.
HEARTBEAT_TIMEOUT_S = 30
_job = {"heartbeat_timeout_s": HEARTBEAT_TIMEOUT_S}  # this process's job, as joined
# How long a process waits for the whole job to form (every host of a pod slice may take minutes to boot).
JOIN_TIMEOUT_S = 300
JOIN_FAILED_EXIT = 2


def launched_multiprocess(env: Mapping[str, str] = os.environ) -> bool:
  """Whether the environment describes a job of several processes (hosts)."""
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return True
  for key in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if env.get(key, "1").isdigit() and int(env.get(key, "1")) > 1:
      return True
  return "," in env.get("TPU_WORKER_HOSTNAMES", "")


def job_arguments(coordinator: str = "", num_processes: int = 0, process_id: int = -1,
                  env: Mapping[str, str] = os.environ) -> dict:
  """`jax.distributed.initialize` keywords from flags, else `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`
  and `JAX_PROCESS_ID`; what neither gives is left to JAX's own detection (TPU VMs, Slurm, Open MPI)."""
  out: dict[str, Any] = {}
  coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS", "")
  if coordinator:
    out["coordinator_address"] = coordinator
  num_processes = num_processes or int(env.get("JAX_NUM_PROCESSES", "0") or 0)
  if num_processes:
    out["num_processes"] = num_processes
  if process_id < 0 and env.get("JAX_PROCESS_ID", "") != "":
    process_id = int(env["JAX_PROCESS_ID"])
  if process_id >= 0:
    out["process_id"] = process_id
  if "num_processes" in out and not 0 <= out.get("process_id", 0) < out["num_processes"]:
    raise UserError(f"process id {out.get('process_id')} is not in [0, {out['num_processes']})")
  return out


def join_job(mode: str, *, coordinator: str = "", num_processes: int = 0, process_id: int = -1,
             heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S, join_timeout_s: int = JOIN_TIMEOUT_S,
             exit_fn=os._exit, stream=None) -> bool:
  """Joins the multi-process job (`mode` "on", or "auto" when the environment shows one); returns whether
  it did. On CPU the processes' collectives go through gloo. Call it before any device is touched.

  A job that cannot form (a coordinator that never comes up, a wrong process count) ends this process
  with one line after `join_timeout_s`, rather than with JAX's own abort and C++ stack trace; process 0
  whose coordinator port is taken says so at once.
  """
  if not (mode == "on" or (mode == "auto" and launched_multiprocess())):
    return False
  kwargs = job_arguments(coordinator, num_processes, process_id)
  address = kwargs.get("coordinator_address", "")
  if kwargs.get("process_id") == 0 and address.rpartition(":")[0] in ("127.0.0.1", "localhost"):
    _check_port_free(address)
  if os.environ.get("JAX_PLATFORMS", "").split(",")[0] == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  joined = threading.Event()

  def watchdog():
    if not joined.wait(join_timeout_s):
      print(f"rewire: error: the multi-process job ({kwargs or 'auto-detected'}) did not form within "
            f"{join_timeout_s} s: is every process started, with the same coordinator and process count? "
            f"(--join_timeout sets the wait)", file=stream or sys.stderr, flush=True)
      exit_fn(JOIN_FAILED_EXIT)

  threading.Thread(target=watchdog, name="rewire-join-watchdog", daemon=True).start()
  _job["heartbeat_timeout_s"] = heartbeat_timeout_s
  try:  # JAX's own timeout comes later, so the watchdog's line is the one a job that cannot form ends with
    jax.distributed.initialize(**kwargs, heartbeat_timeout_seconds=heartbeat_timeout_s,
                               initialization_timeout=join_timeout_s + 60)
  except (RuntimeError, ValueError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(f"cannot join the multi-process job ({kwargs or 'auto-detected'}): {first}") from None
  finally:
    joined.set()
  return True


def _check_port_free(address: str) -> None:
  host, _, port = address.rpartition(":")
  with socket.socket() as s:
    try:
      s.bind((host, int(port)))
    except OSError:
      raise UserError(f"the coordinator port {port} is in use on this machine; choose another "
                      f"(JAX_COORDINATOR_ADDRESS or --coordinator)") from None


def lost_peer(reason: str = "it died or was killed", *, stream=None, exit_fn=os._exit) -> None:
  """Stops this process at once with one line: another process of the job is gone (its collectives, and
  the job's heartbeat, would otherwise hold this one for the heartbeat timeout and then abort it)."""
  print(f"rewire: error: process {jax.process_index()} lost another process of the job ({reason}); rerun the "
        "job to resume from its newest sealed checkpoint", file=stream or sys.stderr, flush=True)
  exit_fn(LOST_PEER_EXIT)


class PeerWatch:
  """Exits this process with one line as soon as another process of the job dies (see the module docstring).

  Use as a context manager around a stage; on a clean exit it says goodbye and stops watching.
  """

  def __init__(self, *, exit_fn=os._exit, stream=None):
    self.exit_fn, self.stream = exit_fn, stream or sys.stderr
    self.done = threading.Event()
    self._socks: list[socket.socket] = []

  def __enter__(self):
    from jax._src import distributed  # the job's key-value store: the only way to reach it in this JAX
    # Not a job of several processes: nothing to watch, and JAX's backend stays unstarted, so that a study
    # driver starts Ray's processes from a process without XLA's threads (Ray forks with a `preexec_fn`).
    if distributed.global_state.client is None or jax.process_count() == 1:
      return self
    client = distributed.global_state.client
    if jax.process_index() == 0:
      server = socket.create_server(("", 0))
      # Process 0 hosts the coordinator, so the others reach it at the coordinator's host.
      host = distributed.global_state.coordinator_address.rsplit(":", 1)[0] or "127.0.0.1"
      client.key_value_set(_KEY, f"{host}:{server.getsockname()[1]}")
      for _ in range(jax.process_count() - 1):
        conn, _ = server.accept()
        self._socks.append(conn)
      server.close()
    else:
      host, port = client.blocking_key_value_get(_KEY, 300_000).rsplit(":", 1)
      self._socks.append(socket.create_connection((host, int(port)), timeout=60))
      self._socks[0].settimeout(None)
    for sock in self._socks:
      threading.Thread(target=self._watch, args=(sock,), daemon=True).start()
    return self

  def _watch(self, sock: socket.socket) -> None:
    data = b""
    try:  # one message, ended by a newline, or the connection's end
      while not data.endswith(b"\n") and (chunk := sock.recv(4096)):
        data += chunk
    except OSError:
      pass
    text = data.rstrip(b"\n")
    if self.done.is_set() or text.startswith(_BYE):
      return
    if text.startswith(_GONE):
      lost_peer(text[len(_GONE):].decode(errors="replace"), stream=self.stream, exit_fn=self.exit_fn)
      return
    if text.startswith(_ERR):  # the peer stopped with an error: this process may be stopping with it
      if self.done.wait(_job["heartbeat_timeout_s"]):
        return
      others = [other for other in self._socks if other is not sock]
      for other in others:  # process 0 passes the line on, so every process names the first error
        try:
          other.sendall(_GONE + text[len(_ERR):] + b"\n")
        except OSError:
          pass
      for other in others:  # and lets them go first: its exit ends the job's coordination service
        try:
          other.settimeout(_LET_GO_S)
          other.recv(1)
        except OSError:
          pass
      lost_peer(text[len(_ERR):].decode(errors="replace"), stream=self.stream, exit_fn=self.exit_fn)
      return
    lost_peer(stream=self.stream, exit_fn=self.exit_fn)

  def __exit__(self, exc_type, exc, tb):
    self.done.set()
    if exc_type is None:
      message = _BYE
    else:
      line = (str(exc).strip().splitlines() or [exc_type.__name__])[0][:600]
      message = _ERR + f"process {jax.process_index()} stopped: {line}".encode()
    for sock in self._socks:
      try:
        sock.sendall(message + b"\n")
        sock.close()
      except OSError:
        pass


def leave_after_error(code: int, *, stream=None) -> None:
  """Exits a process of a job that stopped with an error (its line already printed) with status `code`.

  The processes meet at a barrier first. When all arrive (an error they all met), they exit normally,
  through JAX's shutdown. When one does not (it waits in a save's barrier for this one, until its
  `PeerWatch` stops it), this process exits without JAX's shutdown, which would wait for processes that
  are gone. Process 0 hosts the job's coordination service, whose end aborts every process still joined to
  it, so it waits longest: past the others' `PeerWatch` timeout; the others wait half of that.
  """
  if jax.process_count() == 1:
    sys.exit(code)
  from jax._src import distributed
  heartbeat = _job["heartbeat_timeout_s"]
  wait_s = heartbeat + 2 * _LET_GO_S if jax.process_index() == 0 else heartbeat / 2
  try:
    distributed.global_state.client.wait_at_barrier("rewire-leave-after-error", int(wait_s * 1000))
  except Exception:  # a timeout, or a peer already gone
    for s in (sys.stdout, sys.stderr, stream):
      if s is not None:
        s.flush()
    os._exit(code)
  sys.exit(code)
