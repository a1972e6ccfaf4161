"""Server key servlets (``/_matrix/key``)."""
