"""Where requests are recorded: the usage ledger (SQLite by default, PostgreSQL to share)."""

from .ledger import Ledger, LedgerEntry, database_url

__all__ = ["Ledger", "LedgerEntry", "database_url"]
