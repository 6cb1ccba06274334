"""``python -m jobwatch.sim``: run the Reader simulator (same options as ``jobwatch sim``)."""

import sys

from ._runner import main

sys.exit(main())
