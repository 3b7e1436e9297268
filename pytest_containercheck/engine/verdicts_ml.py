"""Moved to :mod:`.verdicts.ml`: this name stays for code written before the move (the same module)."""

import sys

from .verdicts import ml as _moved

sys.modules[__name__] = _moved
