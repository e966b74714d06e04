"""The monitor: scheduling rounds and applying what they show.

``service`` holds the scheduler (:class:`Monitor`), ``registry`` which
domains are watched and how, ``domains`` the per-domain runtime state,
``results`` the one journal writer, ``settings`` the configuration it acts
on and ``wiring`` how the real parts are built from oslo.config.
"""
from masakarimonitors_iim.monitor.service import Monitor

__all__ = ["Monitor"]
