import pytest

from masakarimonitors_iim.verdict import ProbeResult, Verdict, combine

H = ProbeResult.healthy()
F = ProbeResult.failed("app down")
U = ProbeResult.unknown("paused")
R = ProbeResult(Verdict.HEALTHY, "", reset_requested=True)


@pytest.mark.parametrize("results, verdict, reset", [
    ([], Verdict.UNKNOWN, False),
    ([H], Verdict.HEALTHY, False),
    ([H, H], Verdict.HEALTHY, False),
    ([H, F], Verdict.FAILED, False),
    ([U, F], Verdict.FAILED, False),
    ([H, U], Verdict.HEALTHY, False),
    ([U, U], Verdict.UNKNOWN, False),
    ([F, U, H], Verdict.FAILED, False),
    ([R, H], Verdict.HEALTHY, True),
    ([R, F], Verdict.FAILED, True),
])
def test_combine(results, verdict, reset):
    out = combine(results)
    assert out.verdict is verdict
    assert out.reset_requested is reset


def test_combine_keeps_reasons_of_the_deciding_verdict():
    out = combine([H, F, ProbeResult.failed("exit 3")])
    assert out.reason == "app down; exit 3"


def test_healthy_round_still_shows_what_could_not_be_seen():
    assert combine([H, U]).reason == "paused"
