"""THE per-file path, shared by ``pseudo run``, ``--dry-run``, ``pseudo verify``, the Python
API and any later caller: read -> pseudonymize -> write (temporary) -> verify -> outcome.

:mod:`pseudo.pipeline.outcome` says what happened to a file; :mod:`pseudo.pipeline.process`
does it. Where files come from (a tree, the network) and how outputs are committed belong to
the callers (:mod:`pseudo.batch`).
"""
