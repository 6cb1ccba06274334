"""``python -m jobwatch``: the same as the ``jobwatch`` command."""

import sys

from ._cli import main

sys.exit(main())
