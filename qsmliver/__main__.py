"""``python -m qsmliver``: the same as the ``qsmliver`` command."""

import sys

from qsmliver.cli import main

sys.exit(main())
