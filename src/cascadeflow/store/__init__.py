"""Where requests and keys are kept: the usage ledger and the virtual keys (SQLite by default, PostgreSQL to share)."""

from .ledger import Ledger, LedgerEntry, RequestRecord, database_url
from .schema import keys_table, requests_table

__all__ = ["Ledger", "LedgerEntry", "RequestRecord", "database_url", "keys_table", "requests_table"]
