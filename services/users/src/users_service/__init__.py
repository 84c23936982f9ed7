"""users_service."""
