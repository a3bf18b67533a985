"""Runs many `python -m rewire.main` command lines, each in a fork of this one process, which has imported
rewire (and so JAX) once: a fresh interpreter per case would spend 3 s of CPU importing it every time.

Reads a JSON list of cases from stdin, each {"args": [...], "stdout": path, "stderr": path}; for each, forks,
points the child's file descriptors 1 and 2 at those files (so native output lands there too), runs the
command line's main in the child, and prints the child's exit status as one line. The parent never
parses flags nor touches a device, so every child starts from the state a fresh `python -m rewire.main`
has after its imports.
"""

import json
import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _child(case: dict) -> int:
  for fd, path in ((1, case["stdout"]), (2, case["stderr"])):
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(target, fd)
    os.close(target)
  from absl import app
  from rewire import main as rewire_main
  sys.argv = ["rewire.main", *case["args"]]
  try:
    app.run(rewire_main.main, flags_parser=rewire_main.parse_flags)
    code = 0
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  sys.stdout.flush()
  sys.stderr.flush()
  return code


def main() -> None:
  from rewire import main as _  # noqa: F401  the imports every child shares
  cases = json.load(sys.stdin)
  for case in cases:
    pid = os.fork()
    if pid == 0:
      code = 1
      try:
        code = _child(case)
      except BaseException:  # noqa: B036  the child must never return into this loop
        traceback.print_exc()
      finally:
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
  main()
