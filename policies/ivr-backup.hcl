# ivr-backup: takes Raft snapshots for `ivr-vault backup` and signs the backup's manifest,
# and nothing else. A snapshot holds every key, but under Vault's barrier: it opens only
# with the unseal keys, which this identity never sees. It cannot restore (snapshot-force
# needs a root or sudo token), nor read, use or manage any key but one: it signs with
# ivr-backup-sign (ed25519), which no other identity may use, so a backup that verifies
# against that key's public key was made by this identity (docs/backup.md).

path "sys/storage/raft/snapshot" {
  capabilities = ["read"]
}

path "transit/sign/ivr-backup-sign" {
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
