"""The order use cases and the sweep."""
