"""User-facing errors: bad configs, inputs or workdirs, reported as one line without a traceback."""


class UserError(Exception):
  """A problem with what the user asked for (config, data, workdir), not a bug in rewire.

  `rewire.main` prints these as a single `rewire: error: ...` line and exits with status 2.
  """
