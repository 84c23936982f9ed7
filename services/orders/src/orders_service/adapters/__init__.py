"""Concrete implementations of the order service's ports."""
