"""Admin API servlets (``/_synapse/admin``)."""
