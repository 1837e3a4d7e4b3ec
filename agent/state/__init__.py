"""Local persistent state: the SQLite ledger. Knows no HTTP and no folders."""
