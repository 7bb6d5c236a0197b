"""``python -m segdecay`` (also what ``torchrun -m segdecay`` runs)."""

import sys

from segdecay.cli import main

sys.exit(main())
