# ivr-backend: the internal account backend. Decrypt ivr-dtmf, HMAC with ivr-lookup.
# No encrypt (it could then forge entries), no export, no key administration.

path "transit/decrypt/ivr-dtmf" {
  capabilities = ["update"]
}

path "transit/hmac/ivr-lookup" {
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
