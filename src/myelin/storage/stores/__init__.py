"""Stores by domain; each owns its tables and the SQL that touches them."""
