"""Client-server API servlets (``/_matrix/client``)."""
