"""The economy lab: the market's own rules (``domain.clearing``, the ledger's posting rules) on a virtual clock,
fast enough for thousands of agents. It imports the domain only: no database, no NATS, no sandbox."""
