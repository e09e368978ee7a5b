"""``python -m vaekit`` works like the ``vaekit`` console script."""

import sys

from vaekit.cli import main

sys.exit(main())
