"""``ivr-vault doctor``: is this deployment sound? A table of checks, each ✓ or ✗, with a
one-line fix for every ✗ (:mod:`.run` lists them in order)."""
