"""AGI errors: one base for everything a session can raise, then the protocol's own (remote or local).

The channel's errors (`ChannelHungUp`, `AgiCommandError`, `AgiTimeout` in callrouter.fastagi.channel)
derive from AgiError too, so a caller that only needs "this call's AGI is over" catches one type.
"""


class AgiError(Exception):
    """Base of every error of an AGI session: protocol, channel, timeout."""


class AgiProtocolError(AgiError):
    """Base of every FastAGI protocol error."""


class RemoteProtocolError(AgiProtocolError):
    """Asterisk (or whatever connected) sent something malformed or out of order."""


class LocalProtocolError(AgiProtocolError):
    """We tried something the protocol cannot carry: a value with CR/LF/NUL, a second command in flight."""
