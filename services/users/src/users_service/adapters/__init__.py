"""Concrete implementations of the user service's ports."""
