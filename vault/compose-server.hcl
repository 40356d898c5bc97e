# Extra configuration for the dev-mode OpenBao in docker-compose.yml (`bao server -dev
# -config=/vault/config/compose-server.hcl`). The dev template for `make run` and the tests
# is dev-server.hcl.template; this one differs only in fixed container paths.
#
# OpenBao refuses to enable audit devices through the API, so the file audit device is
# declared here. Request and response strings are HMACed in the audit log by default;
# /vault/logs is a volume, so the trail outlives the container.
audit "file" "file" {
  options = {
    file_path = "/vault/logs/audit.log"
  }
}
