"""Library messages: one logger per module under ``asd_lib``, shown or hidden by one switch.

Library code reports through ``logging.getLogger(__name__)`` and never prints; the commands (``asd-run``,
``asd-finetune``, ...) print their own results. What the library says is chosen in one place: the environment
variable ``ASD_KIT_LOG`` (``DEBUG``, ``INFO``, ``WARNING``, ``ERROR``; default ``INFO``), read by ``configure()``,
which every command and every notebook (through ``plots.setup``) calls. The runner's notebooks inherit it, so
``ASD_KIT_LOG=WARNING asd-run ...`` quietens the whole run. A program that imports ``asd_lib`` and never calls
``configure`` keeps Python's default (warnings only, through its own handlers).
"""
from __future__ import annotations

import logging
import os
import sys

ENV = "ASD_KIT_LOG"
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class _CurrentStream(logging.StreamHandler):
    """A handler writing to whatever sys.stdout / sys.stderr is at the time of the message (Jupyter swaps them)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    @property
    def stream(self):  # noqa: D102
        return getattr(sys, self._name)

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property ignores that
        pass


def level_from_env(default: str = "INFO") -> int:
    """The level named by $ASD_KIT_LOG (default INFO); an unknown name says so on stderr and counts as INFO."""
    name = (os.environ.get(ENV) or default).strip().upper()
    if name not in _LEVELS:
        print(f"warning: {ENV}={os.environ.get(ENV)!r} is not one of {', '.join(_LEVELS)}; using {default}",
              file=sys.stderr)
        name = default
    return getattr(logging, name)


def configure(level: int | str | None = None, *, info_stream: str = "stdout") -> logging.Logger:
    """Show the library's messages at ``level`` (default: $ASD_KIT_LOG, else INFO): information on ``info_stream``
    (stdout; a command whose stdout is data, such as the online scorer's JSON lines, passes "stderr"), warnings and
    errors on stderr, the bare message without logger names. Calling it again only changes the level and stream."""
    if level is None:
        level = level_from_env()
    elif isinstance(level, str):
        if level.upper() not in _LEVELS:
            raise ValueError(f"log level {level!r}: choose one of {', '.join(_LEVELS)}")
        level = getattr(logging, level.upper())
    root = logging.getLogger("asd_lib")
    root.setLevel(level)
    for h in [h for h in root.handlers if getattr(h, "_asd_kit", False)]:
        root.removeHandler(h)
    out, err = _CurrentStream(info_stream), _CurrentStream("stderr")
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err.setLevel(logging.WARNING)
    for h in (out, err):
        h._asd_kit = True
        h.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(h)
    root.propagate = False
    return root
