"""Getting messages out: the delivery loop, channel settings, tracking, on-site, offline, push."""
