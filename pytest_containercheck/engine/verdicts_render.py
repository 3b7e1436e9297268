"""Moved to :mod:`.verdicts.render`: this name stays for code written before the move (the same module)."""

import sys

from .verdicts import render as _moved

sys.modules[__name__] = _moved
