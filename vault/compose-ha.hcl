# The OpenBao nodes of docker-compose.ha.yml (development), one file for all three, each
# mounted as /openbao/config/server.hcl. What differs between the nodes comes from their
# environment: BAO_RAFT_NODE_ID, BAO_API_ADDR and BAO_CLUSTER_ADDR. Otherwise as
# compose-server.hcl: server mode, Raft storage on the node's own volume, plain HTTP on
# the internal network, the file audit device.
#
# retry_join names every node: a new node finds the cluster through whichever answers,
# once the unseal step gives it the key. performance_multiplier = 1: Raft's tightest
# timings (a new leader ~1.3 s after the old one was SIGKILLed, measured by the make
# run-ha drills).
storage "raft" {
  path                   = "/openbao/file"
  performance_multiplier = 1

  retry_join {
    leader_api_addr = "http://vault:8200"
  }
  retry_join {
    leader_api_addr = "http://vault-2:8200"
  }
  retry_join {
    leader_api_addr = "http://vault-3:8200"
  }
}

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_disable     = true
}

disable_mlock = true

audit "file" "file" {
  options = {
    file_path = "/openbao/logs/audit.log"
  }
}
