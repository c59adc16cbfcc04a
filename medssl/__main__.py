"""``python -m medssl`` runs the command line."""

import sys

from medssl.cli import main

sys.exit(main())
