"""Delivery of failure notifications: the outbox sender and the drivers."""
