"""Entry point of `python -m asd_lib.synth`."""
import sys

from .core import main

sys.exit(main())
