"""Assembling a process from config: listeners, servlets, stream writers, jobs."""
