"""Guards: what may hold a report the state machine has decided on.

See :mod:`masakarimonitors_iim.guards.base`.
"""
