"""Talking to Vault: the client (login, renewal, errors), Transit batching, bootstrap.

Shared by every process; what each may do is decided by its Vault policy, not here.
"""
