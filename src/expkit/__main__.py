"""`python -m expkit ...`: the same as the `expkit` command."""

import sys

from expkit.cli import main

sys.exit(main())
