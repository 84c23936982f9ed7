"""analytics_service."""
