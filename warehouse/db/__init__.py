"""The database: the engine and its sessions, the raw-driver seam, slow statements, retries of
whole transactions, the typed models and the migrations, the roles, the embedded server."""
