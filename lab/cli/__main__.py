"""``python -m lab.cli`` runs the command line, as ``crf-lab`` and ``python -m lab`` do."""

from lab.cli import main

raise SystemExit(main())
