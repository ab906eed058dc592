"""`python -m reliability`: the scenario runner (reliability/run.py)."""

import sys

from reliability.run import main

sys.exit(main())
