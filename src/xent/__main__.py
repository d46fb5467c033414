"""``python -m xent``: the same as the ``xent`` command."""

import sys

from xent.cli import main

sys.exit(main())
