"""MongoDB access: the connection, the base repository, migrations and metrics listeners."""
