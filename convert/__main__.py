"""`python -m nanoserve.convert ...` is `nanoserve convert ...`."""

import sys

from nanoserve.convert.cli import main

sys.exit(main())
