"""Minutes packages: usage from the CDRs, renewal warnings, and sizing."""
