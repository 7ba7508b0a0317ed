"""Asterisk's side of FastAGI, played over real TCP for tests, `simulate` and the benchmark."""
