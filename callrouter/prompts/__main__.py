"""`python -m callrouter.prompts build|tts ...`: the prompt commands on their own."""

from callrouter.cli.prompts import main

raise SystemExit(main())
