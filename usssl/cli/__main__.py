"""``python -m usssl.cli``: the ``usssl`` command."""

import sys

from usssl.cli import main

sys.exit(main())
