"""The internet-facing webhook (``ivr-vault serve webhook``): Twilio's requests in, TwiML out.

Runs behind the TLS proxy with the ``ivr-webhook`` Vault identity, which may only *encrypt*
with ``ivr-dtmf``. Nothing in this package can decrypt.
"""
