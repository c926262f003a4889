"""``python -m grand_engine.cli``: the same as the ``grand-engine`` command."""

import sys

from grand_engine.cli import main

sys.exit(main())
