"""ivr-vault: Twilio Voice DTMF gather with Vault Transit encryption."""

__version__ = "0.1.0"
