"""Routing plans changed while the service runs (issue 14): versions in the database, one save function for
the console, the API and the command line, and every router following the newest versions.

The rule (docs/plans.md): a number runs its newest version in the database; a number with no version
there runs from its file in dialplans/.
"""
