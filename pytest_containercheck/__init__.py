"""pytest-containercheck: does this image really do GPU compute and headless rendering here?"""

from .container import CommandResult, Container
from .matrix import Cell, Column, Matrix
from .probing import ProbeResult
from .runtimes import Target
from .verdict import Verdict

__all__ = ["Cell", "Column", "CommandResult", "Container", "Matrix", "ProbeResult", "Target", "Verdict"]
__version__ = "0.1.0"
