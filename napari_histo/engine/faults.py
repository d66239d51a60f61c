"""Crash points: where a run can be stopped by a test to prove it survives a kill there.

The engine calls :func:`crash_point` between every two filesystem steps of a run (each tile's
files and journal line, each output of the assembly, ``run.json``, each file of the clean-up).
Normally it does nothing. With ``NAPARI_HISTO_CRASH_AT=N`` in the environment the process ends
at the N-th call with ``os._exit(137)``, as ``kill -9`` would end it: no ``finally`` block, no
flush, no clean-up. ``tests/test_engine_crash.py`` runs a slide once per N until a run finishes,
and checks after each kill that the folder is either complete or resumable to the same result.
"""

from __future__ import annotations

import os

_CRASH_AT = int(os.environ.get("NAPARI_HISTO_CRASH_AT", "0") or 0)
_calls = 0


def crash_point(label: str) -> None:
    """Count one filesystem step (``label`` names it in the trace); end the process at the
    configured step."""
    global _calls
    if not _CRASH_AT:
        return
    _calls += 1
    trace = os.environ.get("NAPARI_HISTO_CRASH_TRACE")
    if trace:
        with open(trace, "a", encoding="utf-8") as fh:
            fh.write(f"{_calls} {label}\n")
    if _calls == _CRASH_AT:
        os._exit(137)
