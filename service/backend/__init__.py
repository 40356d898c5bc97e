"""The internal account backend (``ivr-vault serve backend``): the only component that decrypts.

Runs on the internal network with the ``ivr-backend`` Vault identity: decrypt ``ivr-dtmf``,
HMAC with ``ivr-lookup``. ``enrolment`` provisions accounts under the same identity.
"""
