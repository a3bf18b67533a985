"""Holds a two-node Ray cluster on localhost for a test module (`ray_cluster` in conftest), from a process
of its own.

Ray starts its node processes with a Python `preexec_fn`, which the `subprocess` docs call unsafe in a
process with threads, and the pytest worker has JAX's thread pools. A start from the worker once timed
out (Ray's 30 s wait for its GCS, with no GCS log written) beside the multi-process tests. This process
imports no JAX. It prints one line of JSON (the address and the second node's id), then holds the nodes
until its stdin closes, which the fixture does at teardown (and the kernel does if the test process dies).
"""

import json
import sys

from ray.cluster_utils import Cluster

MARK = "ray_nodes:"


def main() -> None:
  cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
  try:
    second = cluster.add_node(num_cpus=1, resources={"second_node": 1})
    cluster.wait_for_nodes()
    print(MARK + json.dumps({"address": cluster.address, "second": second.node_id}), flush=True)
    sys.stdin.read()
  finally:
    cluster.shutdown()


if __name__ == "__main__":
  main()
