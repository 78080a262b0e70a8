from __future__ import annotations

import pytest

from mirrorbits.endpoints import ipv6_available, listen_description


def test_go_addresses() -> None:
    assert listen_description("127.0.0.1:8080") == "tcp:8080:interface=127.0.0.1"
    assert listen_description("[::1]:8080") == "tcp6:8080:interface=\\:\\:1"
    assert listen_description("unix:/run/m.sock") == "unix:/run/m.sock"
    expected = "tcp6:8080:interface=\\:\\:" if ipv6_available() else "tcp:8080"
    assert listen_description(":8080") == expected
    assert listen_description("systemd:domain=INET:index=0") == "systemd:domain=INET:index=0"


@pytest.mark.parametrize("bad", ["", "8080", "host:", "host:http", ":99999"])
def test_bad(bad: str) -> None:
    with pytest.raises(ValueError):
        listen_description(bad)
