"""The durable per-domain journal: a pure state machine and its SQLite store.

The machine decides, the store remembers; neither talks to libvirt or
Masakari, so a failure episode is judged the same way before and after a
restart.
"""
