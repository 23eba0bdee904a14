"""``python -m adapters``: the same as the ``adapters`` command."""

import sys

from adapters.cli.main import main

sys.exit(main())
