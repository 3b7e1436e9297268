"""Moved to :mod:`.verdicts.gpu`: this name stays for code written before the move (the same module)."""

import sys

from .verdicts import gpu as _moved

sys.modules[__name__] = _moved
