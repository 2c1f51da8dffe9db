"""``python -m r1reward.serve``: the same as ``r1reward serve``."""

import sys

from r1reward.serve.cli import main

sys.exit(main())
