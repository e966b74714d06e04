# The two commands the README promises: `make demo` and `make test`.
# Each installs what it needs on a fresh machine and can be run again.
.PHONY: demo test unit bench sample-config setup

setup:
	./tools/setup-dev.sh

demo: setup
	PYTHONPATH=tools .venv/bin/python tools/demo.py

test: setup
	PYTHONPATH=tools .venv/bin/python -m testbed setup
	.venv/bin/ruff check masakarimonitors_iim tests tools benchmarks
	PYTHONPATH=tools .venv/bin/python -m pytest -p no:cacheprovider tests

unit: setup
	.venv/bin/python -m pytest -p no:cacheprovider tests/unit

bench: setup
	PYTHONPATH=tools .venv/bin/python benchmarks/probe_round.py

sample-config: setup
	.venv/bin/oslo-config-generator --config-file etc/oslo-config-generator/masakari-iim.conf
