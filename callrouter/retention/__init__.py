"""Recording retention: the scheduled purge of old recordings and orphan files."""
