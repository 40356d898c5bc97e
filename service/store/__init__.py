"""The account store: HMAC verifiers, lockout state, remembered answers and sealed records.

Holds ciphertexts and HMACs only, never a digit. Used by the backend and operator commands.
"""
