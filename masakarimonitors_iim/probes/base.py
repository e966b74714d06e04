"""The one small interface every probe implements, and its loader.

Probes are stevedore plugins in the ``masakarimonitors_iim.probes``
namespace, so a third-party package can add one without changes here.
"""
from __future__ import annotations

import abc
import functools
import time
from typing import Any, Callable, Mapping, cast

from stevedore import driver
from stevedore import exception as stevedore_exc
from stevedore import extension

from masakarimonitors_iim.hypervisor.types import AgentChannel
from masakarimonitors_iim.verdict import ProbeResult

NAMESPACE = "masakarimonitors_iim.probes"

#: Shortest timeout given to a clean-up call (kill, file close) even when
#: the round's budget is spent: skipping it would leak into the guest.
CLEANUP_CALL_TIMEOUT = 1.0


class ProbeConfigError(ValueError):
    """A probe's parameters are invalid; the message names the field."""


class UnknownProbe(ProbeConfigError):
    """No probe plugin of that name is installed."""


class Probe(abc.ABC):
    """One probe instance serves one domain for its whole life.

    A probe may keep state between rounds (a heartbeat's last value, an
    exec still running in the guest). ``run`` must return within
    ``timeout`` seconds plus a small margin and must not raise for guest
    behaviour: an :class:`AgentError` it does not handle itself is mapped
    to a verdict by the caller, anything else is a bug and is logged as
    UNKNOWN.
    """

    #: entry point name, set by subclasses
    name: str = ""

    #: Clocks, as attributes so tests can drive time without sleeping.
    #: ``_clock`` measures durations (never jumps); ``_wallclock`` is only
    #: compared with timestamps the guest wrote.
    _clock: Callable[[], float] = staticmethod(time.monotonic)
    _wallclock: Callable[[], float] = staticmethod(time.time)
    _sleep: Callable[[float], None] = staticmethod(time.sleep)

    def __init__(self, params: Mapping[str, Any]) -> None:
        """Validate ``params``; raise :class:`ProbeConfigError` naming the bad field."""
        if not isinstance(params, Mapping):
            raise ProbeConfigError(
                "probe %r: parameters must be a mapping of name: value, got %s"
                % (self.name, type(params).__name__))
        self.params = dict(params)

    @classmethod
    def policy_notes(cls, params: Mapping[str, Any], interval: float,
                     timeout: float) -> list[str]:
        """Warnings for settings that are valid alone but work against the
        policy's ``interval`` or round ``timeout`` (e.g. a check allowed to
        run longer than a round).

        ``__init__`` cannot see these: it gets only ``params``, while the
        interval and timeout come from other rules or per-instance keys and
        are known only once a domain's policy is resolved. Only the probe
        knows what its parameters mean, so the policy asks the class,
        without an instance, for every domain on every resolution: keep it
        cheap and side-effect free, and check types yourself (``params``
        from the config file have not been through ``__init__``). The notes
        reach ``masakari-iim policy show`` and the status output, so write
        each as one line saying what to change.
        """
        return []

    def required_commands(self) -> set[str]:
        """Agent RPCs this probe needs; checked against guest-info at discovery."""
        return set()

    @abc.abstractmethod
    def run(self, agent: AgentChannel, timeout: float) -> ProbeResult:
        """Probe the guest once."""

    def close(self, agent: AgentChannel | None) -> None:
        """Release anything left in the guest (e.g. kill a pending exec)."""


class Deadline:
    """A round's time budget, so every agent call gets only what is left.

    Agent calls are the slow part of a probe (a hung agent costs the whole
    timeout), so each one is given the remaining budget rather than a
    fixed timeout; otherwise three calls could take three timeouts.
    """

    def __init__(self, seconds: float, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.end = clock() + max(0.0, seconds)

    def remaining(self) -> float:
        return max(0.0, self.end - self._clock())

    def call_timeout(self, floor: float = 0.1) -> float:
        """Timeout for the next agent call: what is left, never zero (a
        zero timeout means "don't wait" to libvirt, not "no time left")."""
        return max(floor, self.remaining())


def available_probes() -> list[str]:
    """Names of the installed probe plugins, for error messages."""
    mgr: extension.ExtensionManager[Probe] = extension.ExtensionManager(
        NAMESPACE, invoke_on_load=False)
    return sorted({ep.name for ep in mgr.list_entry_points()})


def load_probe(name: str, params: Mapping[str, Any]) -> Probe:
    """Instantiate the probe plugin called ``name`` with ``params``.

    Raises :class:`UnknownProbe` when no plugin has that name and
    :class:`ProbeConfigError` when the plugin rejects ``params``, so a
    policy loader can name the offending field either way.
    """
    try:
        mgr: driver.DriverManager[Probe] = driver.DriverManager(
            NAMESPACE, name, invoke_on_load=True,
            invoke_args=(params,), on_load_failure_callback=None,
            on_missing_entrypoints_callback=None)
    except stevedore_exc.NoMatches:
        raise UnknownProbe(
            "no probe plugin named %r is installed (installed: %s): fix the "
            "name or install the package that provides it"
            % (name, ", ".join(available_probes()) or "none")) from None
    except stevedore_exc.MultipleMatches:
        raise ProbeConfigError(
            "more than one installed package provides a probe named %r: "
            "uninstall one of them" % name) from None
    # invoke_on_load: the driver is the instance, not the class.
    return cast(Probe, mgr.driver)


@functools.lru_cache(maxsize=None)
def probe_class(name: str) -> type[Probe] | None:
    """The class of the probe plugin called ``name``, without creating a
    probe; None if no usable plugin has that name.

    For policy resolution, which runs for every domain and must stay
    cheap and never raise: the entry point is looked up and imported once
    per name for the life of the process (stevedore caches entry points
    per process too, so a newly installed plugin needs a restart either
    way). Errors are for :func:`load_probe`, which the policy loader runs
    on every probe in the file, to report.
    """
    try:
        mgr: driver.DriverManager[Probe] = driver.DriverManager(
            NAMESPACE, name, invoke_on_load=False,
            on_missing_entrypoints_callback=None)
        plugin = mgr.driver
    except Exception:  # missing, duplicated or broken: load_probe says which
        return None
    if isinstance(plugin, type) and issubclass(plugin, Probe):
        return plugin
    return None
