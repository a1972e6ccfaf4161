"""Handlers of the Synapse-compatible admin API (``/_synapse/admin``)."""
