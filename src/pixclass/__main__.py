"""``python -m pixclass``: the same command line as ``pixclass`` (torchrun starts it this way)."""

import sys

from .cli import main

sys.exit(main())
