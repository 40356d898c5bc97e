"""``make bench``: the webhook with Vault Transit in the loop, against the same webhook with an
in-process AES-256-GCM key (the baseline, which exists only here), measured by wrk."""
