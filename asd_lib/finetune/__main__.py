"""``python -m asd_lib.finetune`` (and ``torchrun -m asd_lib.finetune``): see asd_lib.finetune.cli.main."""
import sys

from .cli import main

sys.exit(main())
