"""Protocol errors: the peer's fault (remote) or ours (local)."""


class AgiProtocolError(Exception):
    """Base of every FastAGI protocol error."""


class RemoteProtocolError(AgiProtocolError):
    """Asterisk (or whatever connected) sent something malformed or out of order."""


class LocalProtocolError(AgiProtocolError):
    """We tried something the protocol cannot carry: a value with CR/LF/NUL, a second command in flight."""
