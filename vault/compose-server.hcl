# The OpenBao server of docker-compose.yml (dev), mounted as /openbao/config/server.hcl: the
# image's entrypoint runs `bao server -config=/openbao/config` as its unprivileged user.
# Server mode with integrated storage on the vault-data volume, so keys, AppRoles, tokens
# survive `docker compose restart vault` and `down`/`up`; the vault-unseal step opens it.
# The local one of `make run` and the tests is dev-server.hcl.template (same settings).
storage "raft" {
  path                   = "/openbao/file"
  node_id                = "vault"
  performance_multiplier = 1
}

# Plain HTTP on the internal network, as before: development only. docker-compose.prod.yml
# replaces this file with prod-server.hcl (TLS).
listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "127.0.0.1:8201"
  tls_disable     = true
}

api_addr     = "http://vault:8200"
cluster_addr = "http://127.0.0.1:8201"

# Integrated storage maps its files into memory; mlock would pin them. OpenBao recommends
# disabling mlock with Raft, and the container has no IPC_LOCK capability anyway.
disable_mlock = true

# OpenBao refuses to enable audit devices through the API, so the file audit device is
# declared here. Request and response strings are HMACed in the audit log by default;
# /openbao/logs is a volume, so the trail outlives the container.
audit "file" "file" {
  options = {
    file_path = "/openbao/logs/audit.log"
  }
}
