# ivr-keyadmin: the operator's identity for key lifecycle work.
# May rotate, configure (never exportable / plaintext backup / deletion), rewrap and read
# key metadata. May never decrypt, export, back up, trim or delete.

path "transit/keys" {
  capabilities = ["list"]
}

path "transit/keys/ivr-dtmf" {
  capabilities = ["read"]
}

path "transit/keys/ivr-lookup" {
  capabilities = ["read"]
}

path "transit/keys/ivr-legacy" {
  capabilities = ["read"]
}

path "transit/keys/ivr-dtmf/rotate" {
  capabilities = ["update"]
}

path "transit/keys/ivr-lookup/rotate" {
  capabilities = ["update"]
}

path "transit/keys/ivr-legacy/rotate" {
  capabilities = ["update"]
}

path "transit/keys/+/config" {
  capabilities = ["update"]
  denied_parameters = {
    "exportable"             = []
    "allow_plaintext_backup" = []
    "deletion_allowed"       = []
  }
}

# The backup signing key is the backup identity's alone: a rotation (auto_rotate_period)
# would sign new backups with a version the operators' exported public key lacks.
path "transit/keys/ivr-backup-sign/config" {
  capabilities = ["deny"]
}

path "transit/rewrap/ivr-dtmf" {
  capabilities = ["update"]
}

path "transit/rewrap/ivr-legacy" {
  capabilities = ["update"]
}

# BYOK import of the tutorial's key (ivr-vault legacy import-key): a new key only.
path "transit/wrapping_key" {
  capabilities = ["read"]
}

path "transit/keys/ivr-legacy/import" {
  capabilities = ["update"]
  denied_parameters = {
    "exportable"             = []
    "allow_plaintext_backup" = []
  }
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
