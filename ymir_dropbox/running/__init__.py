"""Running: the daemon, watching the inbox, readiness, the folders, and the command line."""
