"""``python -m asd_lib.pretrain``: see asd_lib.pretrain.train.main."""
import sys

from .train import main

sys.exit(main())
