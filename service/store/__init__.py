"""The account store: HMAC verifiers, cards' lockout state, callers' failures (by keyed HMAC),
each call's remembered answers, and sealed records.

Holds ciphertexts and HMACs only, never a digit. Used by the backend and operator commands.
"""
