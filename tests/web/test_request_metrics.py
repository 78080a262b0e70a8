"""The request path's metrics: plain integers that become the library's counter and histogram
families at scrape time, with bounded labels and Prometheus' bucket semantics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mirrorbits.web.resource import RedirectCounts
from mirrorbits.web.site import DURATION_BUCKETS, RequestMetrics, outcome_of


def samples(*collectors: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    for c in collectors:
        registry.register(c)  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_outcomes_are_bounded_and_fallbacks_told_apart() -> None:
    assert outcome_of(302, False) == "redirect"
    assert outcome_of(302, True) == "fallback"
    assert outcome_of(200, True) == "fallback"  # JSON or mirror list made of the fallbacks
    assert outcome_of(200, False) == "ok"
    assert outcome_of(404, False) == "not_found"
    assert outcome_of(503, False) == "unavailable"
    assert outcome_of(418, False) == "client_error"
    assert outcome_of(502, False) == "error"
    assert outcome_of(101, False) == "other"


def test_request_counts_and_durations_become_a_counter_and_a_histogram() -> None:
    m = RequestMetrics()
    m.observe("redirect", 302, False, 0.00005)
    m.observe("redirect", 302, False, DURATION_BUCKETS[2])  # on a bound: counted in that bucket
    m.observe("redirect", 302, True, 0.3)
    m.observe("redirect", 404, False, 100.0)  # beyond the last bound: +Inf only
    m.observe("json", 200, False, 0.001)
    got = samples(m)
    total = "mirrorbits_http_requests_total"
    assert got[(total, (("kind", "redirect"), ("outcome", "redirect")))] == 2
    assert got[(total, (("kind", "redirect"), ("outcome", "fallback")))] == 1
    assert got[(total, (("kind", "redirect"), ("outcome", "not_found")))] == 1
    assert got[(total, (("kind", "json"), ("outcome", "ok")))] == 1

    def bucket(le: str, kind: str = "redirect") -> float:
        return got[("mirrorbits_http_request_duration_seconds_bucket", (("kind", kind), ("le", le)))]

    assert bucket("0.0001") == 1
    assert bucket("0.00025") == 1
    assert bucket("0.0005") == 2
    assert bucket("0.25") == 2 and bucket("0.5") == 3
    assert bucket("5.0") == 3 and bucket("+Inf") == 4
    assert got[("mirrorbits_http_request_duration_seconds_count", (("kind", "redirect"),))] == 4
    assert abs(got[("mirrorbits_http_request_duration_seconds_sum", (("kind", "redirect"),))]
               - (0.00005 + 0.0005 + 0.3 + 100.0)) < 1e-9
    assert bucket("+Inf", "json") == 1


def test_country_and_mirror_counts() -> None:
    c = RedirectCounts()
    c.countries.update({"FR": 3, "": 2})
    c.mirrors["m1"] = [2, 2048]
    got = samples(c)
    assert got[("mirrorbits_http_client_requests_total", (("country", "FR"),))] == 3
    assert got[("mirrorbits_http_client_requests_total", (("country", "unknown"),))] == 2
    assert got[("mirrorbits_mirror_redirects_total", (("mirror", "m1"),))] == 2
    assert got[("mirrorbits_mirror_redirected_bytes_total", (("mirror", "m1"),))] == 2048
