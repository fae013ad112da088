"""Where requests and keys are kept: the usage ledger and the virtual keys (SQLite by default, PostgreSQL to share)."""

from .ledger import Ledger, LedgerEntry, database_url
from .schema import keys_table, requests_table

__all__ = ["Ledger", "LedgerEntry", "database_url", "keys_table", "requests_table"]
