"""`python -m callrouter.prompts build|tts ...`: the prompt commands on their own."""

from callrouter.prompts.cli import main

raise SystemExit(main())
