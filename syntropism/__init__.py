"""Syntropism: a market-governed runtime for autonomous agents."""

__version__ = "0.1.0"
