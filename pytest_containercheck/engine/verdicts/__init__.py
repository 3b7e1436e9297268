"""Every verdict: pure functions, facts in, :class:`~..verdict.Verdict` out.

One module per row family (:mod:`.system`, :mod:`.gpu`, :mod:`.render`, and the ML rows), each
unit-tested on facts recorded from real runs.  Nothing here runs a probe or imports pytest.
"""
