"""How the outside world reaches the order use cases: the gRPC servicer."""
