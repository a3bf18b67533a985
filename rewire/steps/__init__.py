"""Steps: a study or a pipeline as a graph of idempotent steps, run on Ray, here or on a cluster.

  step.py      a step (a name, an entry point, its config, the steps it reads), its hash and directory
  status.py    a step's status record (RUNNING with a heartbeat lease, SUCCESS, FAILED), written atomically
  graph.py     a graph of steps: order, directories, states, and the dry run's table
  cluster.py   where it runs: connecting to Ray (here or by address), what the nodes offer, run settings
  progress.py  the progress line's ETA
  worker.py    what runs in a step's Ray worker: its log, its lease, its stage (joined to a multi-host job)
  hosts.py     a step of several hosts: Ray tasks in a placement group (or a claimed TPU slice)
  engine.py    the driver: connects to Ray, asks for each step's resources, retries, progress with an ETA

A step's output directory is its readable name plus a hash of its config and of its inputs' hashes, so a
changed key reruns exactly the steps that depend on it, and never overwrites an old result; a SUCCESS step
is skipped, a RUNNING one whose lease expired (its driver or node died) is taken over and resumes from its
newest checkpoint, as every stage does.

May import: the core (modules directly in rewire/), rewire.config, rewire.stages (its dispatch and
multihost). Never rewire.study (studies are graphs of steps, not the other way round).
"""
