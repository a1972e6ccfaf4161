"""``python -m myelin`` runs the CLI."""

import sys

from myelin.cli import main

sys.exit(main())
