"""Small helpers every room uses, each written once: text made safe for a
log line, the retry back-off, and "log once until it changes"."""
