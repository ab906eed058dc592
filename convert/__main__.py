"""`python -m convert ...` is `nanoserve convert ...`."""

import sys

from convert.cli import main

sys.exit(main())
