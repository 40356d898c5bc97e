"""Key lifecycle for the operator (key-admin identity): status, rotate, retire, rewrap, BYOK.

Never decrypts and never exports: every operation here works on key metadata or inside Vault.
"""
