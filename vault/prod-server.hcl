# The OpenBao server of docker-compose.prod.yml: server mode, integrated storage (Raft) on
# the vault-data volume, a TLS listener. Mounted over compose-server.hcl, as
# /openbao/config/server.hcl. The certificate and key are the vault-tls step's, or the
# operator's (docs/deployment.md#production).
storage "raft" {
  path    = "/openbao/file"
  node_id = "vault"
  # Raft's tightest timings; what OpenBao recommends for production (the default, 5, is
  # for slow development machines). Measured here: init 2 s instead of 7 s.
  performance_multiplier = 1
}

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "127.0.0.1:8201"
  tls_cert_file   = "/openbao/tls/server.crt"
  tls_key_file    = "/openbao/tls-key/server.key"
  tls_min_version = "tls12"
}

api_addr     = "https://vault:8200"
cluster_addr = "https://127.0.0.1:8201"

# Integrated storage maps its files into memory; mlock would pin them. OpenBao recommends
# disabling mlock with Raft, and the container has no IPC_LOCK capability anyway.
disable_mlock = true

audit "file" "file" {
  options = {
    file_path = "/openbao/logs/audit.log"
  }
}
