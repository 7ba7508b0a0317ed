"""`python -m callrouter` runs the command line."""

from callrouter.cli import main

raise SystemExit(main())
