# ivr-webhook: the internet-facing webhook. Encrypt caller entries with ivr-dtmf, nothing else.
# No decrypt, no key read, no export. Token self-management only (the AppRole sets
# token_no_default_policy, so nothing from the default policy applies).

path "transit/encrypt/ivr-dtmf" {
  capabilities = ["update"]
}

path "auth/token/lookup-self" {
  capabilities = ["read"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}

path "auth/token/revoke-self" {
  capabilities = ["update"]
}
