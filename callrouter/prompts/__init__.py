"""Prompts: the audio files the plans play.

`audio` turns recordings into what Asterisk plays, `tts` makes stand-in prompts from the texts written in
the plans, `inventory` finds prompts a plan uses that have no file; `callrouter prompts ...` is `callrouter/cli/prompts.py`.
"""
