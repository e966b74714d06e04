"""Introspective instance monitor for OpenStack Masakari."""
