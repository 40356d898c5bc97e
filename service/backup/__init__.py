"""Backups: Vault's Raft snapshot and the account store, together (``archive``), the store
as one SQLite file and back whatever its engine (``transfer``). Above ``vault/`` and
``store/``, which it spans; neither imports it."""
