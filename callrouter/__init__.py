"""callrouter: a FastAGI call-routing engine for 400 numbers."""

__version__ = "0.1.0"
