"""The notification outbox: what Masakari is owed, and the thread that pays.

Rows live in the monitor's one database beside the journal, so a
reported episode and its notification commit together; the sender reads
them back, so whatever was pending when the process died is delivered
after the restart.
"""
