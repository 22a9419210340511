"""The System Service: the HTTP surface agents and the operator talk to."""
