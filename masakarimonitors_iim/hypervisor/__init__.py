"""Everything that touches libvirt lives in this package, and only here."""
