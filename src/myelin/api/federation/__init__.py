"""The server-server API's servlets."""
