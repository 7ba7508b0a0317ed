"""The `callrouter` command line: `main.py` holds the table of commands, `common.py` what they share, one module per command.

Nothing outside this package imports it (but the `__main__` entry points): the commands call the domain
packages, never the other way round.
"""
