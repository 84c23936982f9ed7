"""Ways into the promo-code service: the gRPC servicer."""
