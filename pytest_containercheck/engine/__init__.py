"""The engine: everything a run does, with no pytest in it.

Targets and archives, runtimes, host facts, probing, image sessions, verdicts, the matrix, its
renderers and the report files.  The pytest plugin (the modules beside this package) and the
``containercheck`` command use it; it imports neither (``tests/test_layout.py`` keeps it so).
"""
