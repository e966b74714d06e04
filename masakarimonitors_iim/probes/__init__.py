"""Probes: each module is one way of asking a guest whether it is well."""
