"""Database engines behind one async interface.

SQL in Myelin is written once, with ``?`` placeholders and the common subset
of SQLite and PostgreSQL (``ON CONFLICT``, ``RETURNING``, ``BIGINT``,
``TEXT``). The PostgreSQL engine rewrites placeholders to ``$n``; anything
that truly differs is asked of ``db.engine``.
"""

from myelin.storage.engines.base import Database, Row, Transaction
from myelin.storage.engines.factory import open_database

__all__ = ["Database", "Row", "Transaction", "open_database"]
