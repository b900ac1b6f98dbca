"""``python -m hpsearch``: see :mod:`hpsearch.cli`."""

import sys

from hpsearch.cli import main

sys.exit(main())
