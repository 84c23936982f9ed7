"""Ways into the user service: the gRPC servicer."""
