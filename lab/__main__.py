"""``python -m lab`` runs the command line (see :mod:`lab.cli`)."""

from lab.cli import main

raise SystemExit(main())
