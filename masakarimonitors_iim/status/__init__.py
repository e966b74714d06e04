"""What the monitor is doing, for an operator: ``masakari-iim status``.

The running monitor writes a snapshot beside the journal
(:mod:`.snapshot`); status reads it and the journal database read-only
into one view (:mod:`.model`) and renders it as text (:mod:`.render_text`)
or versioned JSON (:mod:`.render_json`). Reading never writes anything.
"""
from masakarimonitors_iim.status.snapshot import STATUS_NAME
from masakarimonitors_iim.status.snapshot import read_snapshot
from masakarimonitors_iim.status.snapshot import status_path
from masakarimonitors_iim.status.snapshot import write_snapshot

__all__ = ["STATUS_NAME", "read_snapshot", "status_path", "write_snapshot"]
