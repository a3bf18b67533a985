"""`python -m rewire.generate`: see `rewire.generate.cli`."""

import sys

from rewire.generate.cli import main

sys.exit(main())
