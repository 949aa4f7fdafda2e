"""One progress-bar policy for every long loop: on in a terminal and in JupyterLab, quiet in CI and in batch runs.

``bar(iterable, desc=...)`` is ``tqdm.auto.tqdm`` (a widget in JupyterLab, text in a terminal) unless bars are off:
when the caller passes ``enabled=False``, when ``TQDM_DISABLE`` is set (``make test``, the runner's papermill
stages), or when output goes neither to a terminal nor to a notebook kernel (a log file, CI).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Iterable


def enabled(requested: bool = True) -> bool:
    """Whether a bar should show here and now."""
    if not requested or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes"):
        return False
    return "ipykernel" in sys.modules or bool(getattr(sys.stderr, "isatty", lambda: False)())


def bar(iterable: Iterable | None = None, *, desc: str = "", total: int | None = None, enabled_: bool = True,
        leave: bool = False, **kwargs: Any):
    """A ``tqdm.auto`` bar over ``iterable`` (or a manual one with ``total``), disabled by the policy above."""
    from tqdm.auto import tqdm  # heavy: keeps `import asd_lib.progress` (and asd-run --help) light

    return tqdm(iterable, desc=desc, total=total, disable=not enabled(enabled_), leave=leave, **kwargs)
