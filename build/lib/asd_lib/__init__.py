"""asd-kit: a teaching and replication kit for a DCASE 2026 Task 2 ensemble system.

Importing the package is cheap: torch and the other heavy libraries load only in the
stage modules that need them (``asd_lib.backbones``, ``asd_lib.finetune``, ...).
"""

__version__ = "0.1.0"
