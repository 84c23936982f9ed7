"""Use cases of the promo-code service: catalogue, redemption, recovery. Dependencies passed in."""
