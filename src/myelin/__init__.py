"""Myelin: a Matrix homeserver that runs as one process on SQLite or as a fleet of workers."""

__version__ = "0.1.0"
