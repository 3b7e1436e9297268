"""pytest-containercheck: does this image really do GPU compute and headless rendering here?"""

from .fixtures import CommandResult, Container
from .matrix import Cell, Column, Matrix
from .probing import ProbeResult
from .targets import Target

__all__ = ["Cell", "Column", "CommandResult", "Container", "Matrix", "ProbeResult", "Target"]
__version__ = "0.1.0"
