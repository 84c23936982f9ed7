"""The order use cases and the recovery sweep."""
