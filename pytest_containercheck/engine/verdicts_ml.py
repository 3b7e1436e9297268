"""Moved: the ML verdicts are :mod:`.verdicts.torch`, :mod:`.verdicts.xgboost` and
:mod:`.verdicts.transformers` (with :mod:`.verdicts.common`, :mod:`.verdicts.cuda` and
:mod:`.verdicts.failure`); this name stays for code written before the move."""

from .verdict import Verdict
from .verdicts.common import *  # noqa: F403
from .verdicts.common import __all__ as _common
from .verdicts.cuda import *  # noqa: F403
from .verdicts.cuda import __all__ as _cuda
from .verdicts.failure import *  # noqa: F403
from .verdicts.failure import __all__ as _failure
from .verdicts.torch import *  # noqa: F403
from .verdicts.torch import __all__ as _torch
from .verdicts.transformers import *  # noqa: F403
from .verdicts.transformers import __all__ as _transformers
from .verdicts.xgboost import *  # noqa: F403
from .verdicts.xgboost import __all__ as _xgboost

__all__ = ["Verdict", *_common, *_cuda, *_failure, *_torch, *_transformers, *_xgboost]
