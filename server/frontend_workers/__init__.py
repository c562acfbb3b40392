"""Frontend worker processes: several HTTP processes sharing the port in front of one server (issue 18)."""
