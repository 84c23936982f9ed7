"""Concrete implementations of the promo-code service's ports."""
