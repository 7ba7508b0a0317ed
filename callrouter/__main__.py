"""`python -m callrouter` runs the command line."""

from callrouter.cli.main import main

raise SystemExit(main())
