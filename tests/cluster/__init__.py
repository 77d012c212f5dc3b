"""Several ``interactions serve`` processes on one PostgreSQL database behind HAProxy."""
