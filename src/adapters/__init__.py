"""Adapters: the I/O around the pure core (storage, mail, CometD, HTTP, server)."""
