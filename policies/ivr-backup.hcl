# ivr-backup: takes Raft snapshots for `ivr-vault backup`, and nothing else.
# A snapshot holds every key, but under Vault's barrier: it opens only with the unseal
# keys, which this identity never sees. It cannot restore (snapshot-force needs a root or
# sudo token), nor read, use or manage any key.

path "sys/storage/raft/snapshot" {
  capabilities = ["read"]
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
