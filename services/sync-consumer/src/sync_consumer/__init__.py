"""sync_consumer."""
