"""``python -m medssl`` runs the command line."""

import sys

from medssl.cli import main

if __name__ == "__main__":
    sys.exit(main())
