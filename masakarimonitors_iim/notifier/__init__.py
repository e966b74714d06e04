"""The notifier drivers: how one notification reaches Masakari (or a log).

Retries, ordering and durability are the outbox's business
(:mod:`masakarimonitors_iim.outbox`), so a driver only ever tries once.
"""
