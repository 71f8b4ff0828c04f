"""``python -m fuse4seg`` is the ``fuse4seg`` console script."""

import sys

from fuse4seg.cli.main import main

sys.exit(main())
