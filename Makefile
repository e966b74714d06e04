# The two commands the README promises: `make demo` and `make test`.
# Each installs what it needs on a fresh machine and can be run again.
.PHONY: demo test unit lint bench sample-config setup docs

setup:
	./tools/setup-dev.sh

demo: setup
	PYTHONPATH=tools .venv/bin/python tools/demo.py

test: setup lint docs
	PYTHONPATH=tools .venv/bin/python -m testbed setup
	PYTHONPATH=tools .venv/bin/python -m pytest -p no:cacheprovider tests

# Style, and types: tests/unit/fakes.py is checked too, so the hypervisor
# fake cannot drift from the interface the real class implements.
lint: setup
	.venv/bin/ruff check masakarimonitors_iim tests tools benchmarks
	.venv/bin/mypy masakarimonitors_iim tests/unit/fakes.py

unit: setup
	.venv/bin/python -m pytest -p no:cacheprovider tests/unit

# probe_round.py needs root and starts the testbed; scale.py drives the
# real monitor against a simulated hypervisor (~10 min); inventory.py the
# real inventory against libvirt's test driver. benchmarks/README.md.
bench: setup
	PYTHONPATH=tools .venv/bin/python benchmarks/probe_round.py
	.venv/bin/python benchmarks/scale.py
	.venv/bin/python benchmarks/inventory.py

sample-config: setup
	.venv/bin/oslo-config-generator --config-file etc/oslo-config-generator/masakari-iim.conf

# Sphinx, warnings as errors: a malformed table or an option name that
# does not exist fails the build. -E: no cached environment, so an option
# added since the last build is known to every page that names it.
docs: setup
	.venv/bin/sphinx-build -W -E -b html doc/source doc/build/html
