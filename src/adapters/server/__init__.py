"""The server: configuration, the agents file, the composition root and the CLI."""
