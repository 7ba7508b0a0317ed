"""Routing decisions, pure: plan + call + clock + randomness in, effects and a call record out."""
