"""History over the years: the business calendar and zone, the ledger's monthly partitions,
closing months (read-only in the database), and retention."""
