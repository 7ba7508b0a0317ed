"""FastAGI protocol with no IO: bytes in, events out; commands in, bytes out."""
