"""Jobs for the scheduler thread: in order; a durable one whose journal
write failed is held and runs first next time; nothing else is retried."""
import threading

import pytest

from masakarimonitors_iim.db import DatabaseError
from masakarimonitors_iim.monitor.jobs import JobQueue


def test_posting_wakes_the_scheduler_and_jobs_run_in_order():
    wake = threading.Event()
    jobs = JobQueue(wake)
    ran = []
    jobs.post(lambda: ran.append(1))
    jobs.post_durable(lambda: ran.append(2))
    assert wake.is_set()
    jobs.run_pending()
    assert ran == [1, 2] and jobs.held is None


@pytest.mark.parametrize("durable, error, held", [
    (True, DatabaseError("database is locked"), True),
    (False, DatabaseError("database is locked"), False),   # an outcome: the next round brings one
    (True, ValueError("a bug"), False),                    # would fail again: never retried
])
def test_only_a_durable_job_that_failed_to_write_is_held(durable, error, held):
    jobs = JobQueue(threading.Event())
    tries = []

    def job():
        tries.append(1)
        if len(tries) == 1:
            raise error

    after = []
    (jobs.post_durable if durable else jobs.post)(job)
    jobs.post(lambda: after.append(1))
    with pytest.raises(type(error)):
        jobs.run_pending()
    assert (jobs.held is not None) is held
    assert after == []                       # what came after waits
    jobs.run_pending()
    assert len(tries) == (2 if held else 1) and after == [1]
