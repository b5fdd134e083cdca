"""Sub-commands beyond ``data``: each lives beside the library code it calls and registers here."""

from __future__ import annotations

import argparse
from collections.abc import Callable

REGISTER: list[Callable[[argparse._SubParsersAction], None]] = []
