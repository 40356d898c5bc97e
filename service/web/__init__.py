"""HTTP plumbing shared by webhook and backend: access log, body limits, health, metrics."""
