"""Test support: real PostgreSQL, real server processes, small HTTP clients."""
