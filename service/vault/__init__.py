"""Talking to Vault: the blocking client (``client``: login, renewal, errors), the event
loop's (``async_client``) and what both share (``base``); Transit (``transit``), its
batching (``coalescer``) and per-item results (``batch``); the per-process session
(``session``); bootstrap (``bootstrap``); initialising and unsealing a server
(``operator_init``); the production TLS certificate (``tls``).

Shared by every process; what each may do is decided by its Vault policy, not here.
"""
