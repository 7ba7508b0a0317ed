"""The FastAGI edge: the asyncio channel over the AGI state machine, the server, one call's session, and the ports (interfaces) the session needs."""
