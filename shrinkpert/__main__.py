"""``python -m shrinkpert`` runs the command-line interface."""

from .cli import main

raise SystemExit(main())
