"""The long-running service: the run loop and the local status server."""
