"""``python -m edge``: the same as the ``inspector-edge`` console script."""

import sys

from edge.service import main

sys.exit(main())
