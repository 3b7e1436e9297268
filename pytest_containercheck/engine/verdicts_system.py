"""Moved to :mod:`.verdicts.system`: this name stays for code written before the move (the same module)."""

import sys

from .verdicts import system as _moved

sys.modules[__name__] = _moved
