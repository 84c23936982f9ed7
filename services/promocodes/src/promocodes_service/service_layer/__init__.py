"""Use cases of the promo-code service: catalogue, redemption, sweep. Dependencies passed in."""
