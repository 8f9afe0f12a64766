"""Background jobs on RQ: webhook events, batch pre-annotation, second-model review."""
