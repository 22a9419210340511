"""Attacks: each case an attacker agent or client against the real runtime, refused with a reason, nothing moved."""
