"""The System Service's routes, one module per area of the economy."""
