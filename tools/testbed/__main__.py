"""Command line: ``python -m testbed [--workdir DIR] setup|up|down|status``.

  setup   install packages, guest kernel and masakari; build the guest image
  up      setup, then start everything and leave it running in the background
  down    stop everything ``up`` started in the same work directory
  status  show the daemons and endpoints (exit 1 if the testbed is not up)

Run with PYTHONPATH=tools from the repository root. The work directory
defaults to $TESTBED_WORKDIR or ./_lab/testbed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import Testbed, TestbedError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testbed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=("setup", "up", "down", "status"))
    parser.add_argument(
        "--workdir", type=Path, default=Path(os.environ.get("TESTBED_WORKDIR", "_lab/testbed"))
    )
    parser.add_argument(
        "--hostname",
        default="iim-testbed-host",
        help="name of the masakari host (and nova-compute service) to seed",
    )
    args = parser.parse_args(argv)

    tb = Testbed(args.workdir, hostname=args.hostname)
    try:
        if args.command == "setup":
            tb.setup()
            print(f"setup done in {tb.timings['setup']:.1f}s (cache {tb.cache})")
        elif args.command == "up":
            tb.setup()
            tb.start()
            print(json.dumps(tb.status(), indent=2))
            print(
                f"up in {tb.timings['start']:.1f}s (setup {tb.timings['setup']:.1f}s); "
                f"stop with: python -m testbed --workdir {args.workdir} down",
                file=sys.stderr,
            )
        elif args.command == "down":
            tb.stop()
            print("down")
        else:
            status = tb.status()
            print(json.dumps(status, indent=2))
            daemons = status["daemons"]
            if not daemons or not all(d["running"] for d in daemons.values()):
                return 1
    except TestbedError as err:
        print(f"testbed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
