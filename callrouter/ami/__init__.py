"""The Asterisk Manager Interface: test calls through panoramisk."""
