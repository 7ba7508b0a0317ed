"""Prometheus metrics derived from the CDRs in the database: every router's calls, followed incrementally."""
