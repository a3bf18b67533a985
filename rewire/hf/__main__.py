"""`python -m rewire.hf export|import ...`: the Hugging Face command line (`rewire.hf.cli`)."""

import sys

from rewire.hf.cli import main

sys.exit(main())
