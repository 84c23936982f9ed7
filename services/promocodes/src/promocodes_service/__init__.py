"""promocodes_service."""
