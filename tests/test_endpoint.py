"""parse_endpoint: the host checked is the host connected to, and http:// goes to loopback only."""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult, urlsplit

import pytest
from urllib3.util import Url, parse_url

from sentinel_forwarder._sinks.azure import endpoint as _endpoint
from sentinel_forwarder._sinks.azure.endpoint import Endpoint, parse_endpoint

DCE = "https://my-dce-a1b2.westeurope-1.ingest.monitor.azure.com"
CLEAR_TEXT = "uses http://"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        # urlsplit sees 127.0.0.1; urllib3 (so requests) connects to evil.example
        ("http://evil.example:80\\@127.0.0.1:9", "backslash"),
        ("http://evil.example\\@127.0.0.1", "backslash"),
        ("https://evil.example\\.azure.com", "backslash"),
        ("http://127.0.0.1:9@evil.example", "user info"),
        ("http://evil.example#@127.0.0.1", "query or fragment"),
        ("http://evil.example?@127.0.0.1", "query or fragment"),
        ("http://127.0.0.1.evil.example", CLEAR_TEXT),
        ("http://localhost.evil.example", CLEAR_TEXT),
        ("http://localhost.:9", "not a valid host name"),
        ("http://[::1].evil.example", "not a valid URL"),
        ("http://[::1]x:9", "not a valid URL"),
        ("HTTP://EXAMPLE.COM", CLEAR_TEXT),
        ("Http://example.com:80", CLEAR_TEXT),
        ("http://example.com", CLEAR_TEXT),
        ("http://127.1:9", CLEAR_TEXT),  # not a dotted quad: not taken for loopback
        ("http://2130706433:9", CLEAR_TEXT),
        ("http://[::ffff:127.0.0.1]:9", CLEAR_TEXT),
        ("http://0.0.0.0:9", CLEAR_TEXT),
        ("https://user:pw@host.example", "user info"),
        ("https://user@host.example", "user info"),
        ("http://a@b@127.0.0.1", "user info"),
    ],
)
def test_bypass_forms_are_refused(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_endpoint(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://local\thost:9",
        "http://localhost:9\t",
        "\thttp://localhost:9",
        "http://localhost\n.evil.example",
        "http://localhost:9\n",
        "http://127.0.0.1:9\r\nHost: evil.example",
        "https://host .example",
        "https://host.example/\x00",
        "https://host\x7f.example",
        "https://host\u00a0.example",
        "https://host\u2028.example",
    ],
)
def test_white_space_and_control_characters_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"white space|control character|non-ASCII") as info:
        parse_endpoint(url)
    assert repr(url)[1:-1] in str(info.value)  # named, escaped


def test_non_ascii_is_refused() -> None:
    with pytest.raises(ValueError, match="non-ASCII"):
        parse_endpoint("https://bücher.example")
    with pytest.raises(ValueError, match="non-ASCII"):
        parse_endpoint("http://\uff11\uff12\uff17.0.0.1:9")  # full-width digits, which IDNA would fold to 127


@pytest.mark.parametrize("url", [f"{DCE}?", f"{DCE}/?x=1", f"{DCE}#", f"{DCE}#frag"])
def test_query_and_fragment_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="query or fragment"):
        parse_endpoint(url)


@pytest.mark.parametrize("path", ["/dataCollectionRules", "//", "/.", "/x/"])
def test_a_path_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match=r"has a path .*/dataCollectionRules"):
        parse_endpoint(DCE + path)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://host.example", "not an https://"),
        ("ws://localhost:9", "not an https://"),
        ("host.example", "not an https://"),
        ("localhost:9", "not an https://"),
        ("https:host.example", "not an https://"),
        ("https:/host.example", "not an https://"),
        ("//host.example", "not an https://"),
        ("", "not an https://"),
        ("https://", "no host"),
        ("https:///", "no host"),
        ("http://:9", "no host"),
        ("https://host.example:", "empty port"),
        ("http://[::1]:", "empty port"),
        ("https://host.example:0", "outside 1 to 65535"),
        ("https://host.example:65536", "outside 1 to 65535"),
        ("http://[::1]:99999", "outside 1 to 65535"),
        ("https://host.example:x", "not a valid URL"),
        ("https://host.example:+443", "not a valid URL"),
        ("https://host..example", "not a valid host name"),
        ("https://-host.example", "not a valid host name"),
        ("https://%31%32%37.0.0.1", "percent-encoding"),  # urllib3 decodes it, urllib.parse does not
        ("http://%6cocalhost:9", "percent-encoding"),
        ("http://[::1%25lo]:9", "percent-encoding"),
        ("https://[1:2]", "not a valid URL"),
    ],
)
def test_malformed_endpoints_are_refused(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_endpoint(url)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:s3cret@host.example", "https://user:***@host.example"),
        ("https://user:s3/cr?et@host.example/", "https://user:***@host.example/"),
        ("https://user:s3cret@host.example\t", "https://user:***@host.example\\t"),
    ],
)
def test_a_password_is_not_repeated_in_the_error(url: str, shown: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_endpoint(url)
    assert "s3" not in str(info.value)
    assert shown in str(info.value)


def test_the_error_names_the_endpoint() -> None:
    with pytest.raises(ValueError, match=r"^endpoint 'http://dce\.example\.com' uses http://"):
        parse_endpoint("http://dce.example.com")


def test_a_non_string_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="endpoint must be str, not bytes"):
        parse_endpoint(b"https://host.example")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (DCE, Endpoint(DCE, "https", DCE[8:], None, False)),
        (DCE + "/", Endpoint(DCE, "https", DCE[8:], None, False)),
        (DCE + ":443", Endpoint(DCE + ":443", "https", DCE[8:], 443, False)),
        (
            "HTTPS://My-DCE.Example:8443/",
            Endpoint("https://my-dce.example:8443", "https", "my-dce.example", 8443, False),
        ),
        ("https://host.example:1", Endpoint("https://host.example:1", "https", "host.example", 1, False)),
        (
            "https://host.example:65535",
            Endpoint("https://host.example:65535", "https", "host.example", 65535, False),
        ),
        (
            "https://host.example:0443",
            Endpoint("https://host.example:443", "https", "host.example", 443, False),
        ),
        (
            "https://sentinel_emulator:8443",
            Endpoint("https://sentinel_emulator:8443", "https", "sentinel_emulator", 8443, False),
        ),
        (
            "https://127.0.0.1.evil.example",
            Endpoint("https://127.0.0.1.evil.example", "https", "127.0.0.1.evil.example", None, False),
        ),
        (
            "https://[2001:db8::1]:443",
            Endpoint("https://[2001:db8::1]:443", "https", "[2001:db8::1]", 443, False),
        ),
        ("https://10.0.0.4", Endpoint("https://10.0.0.4", "https", "10.0.0.4", None, False)),
        ("http://127.0.0.1:8080", Endpoint("http://127.0.0.1:8080", "http", "127.0.0.1", 8080, True)),
        ("http://127.0.0.1:8080/", Endpoint("http://127.0.0.1:8080", "http", "127.0.0.1", 8080, True)),
        ("http://localhost:1", Endpoint("http://localhost:1", "http", "localhost", 1, True)),
        ("http://LocalHost:9", Endpoint("http://localhost:9", "http", "localhost", 9, True)),
        ("HTTP://127.0.0.1", Endpoint("http://127.0.0.1", "http", "127.0.0.1", None, True)),
        ("http://[::1]:9", Endpoint("http://[::1]:9", "http", "[::1]", 9, True)),
        (
            "http://[0:0:0:0:0:0:0:1]:9",
            Endpoint("http://[0:0:0:0:0:0:0:1]:9", "http", "[0:0:0:0:0:0:0:1]", 9, True),
        ),
        ("http://127.5.6.7:9", Endpoint("http://127.5.6.7:9", "http", "127.5.6.7", 9, True)),
        (
            "http://127.255.255.255:9",
            Endpoint("http://127.255.255.255:9", "http", "127.255.255.255", 9, True),
        ),
        ("https://localhost:8443", Endpoint("https://localhost:8443", "https", "localhost", 8443, True)),
    ],
)
def test_valid_endpoints(url: str, expected: Endpoint) -> None:
    assert parse_endpoint(url) == expected


@pytest.mark.parametrize(
    "host", ["128.0.0.1", "126.255.255.255", "localhost.evil.example", "evil-localhost", "[::2]", "[::]"]
)
def test_only_loopback_hosts_are_loopback(host: str) -> None:
    endpoint = parse_endpoint(f"https://{host}:9")
    assert endpoint.is_loopback is False
    with pytest.raises(ValueError, match=CLEAR_TEXT):
        parse_endpoint(f"http://{host}:9")


def test_endpoint_is_frozen() -> None:
    endpoint = parse_endpoint(DCE)
    with pytest.raises(AttributeError):
        endpoint.host = "evil.example"  # type: ignore[misc]


def test_parsers_that_disagree_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should urllib.parse ever read a URL differently from urllib3, the endpoint is refused."""

    def other_port(url: str) -> SplitResult:
        return urlsplit(url.replace(":9", ":10"))

    def other_host(url: str) -> SplitResult:
        return urlsplit(url.replace("localhost", "127.0.0.1"))

    assert parse_endpoint("http://localhost:9").is_loopback
    for fake in (other_port, other_host):
        monkeypatch.setattr(_endpoint, "urlsplit", fake)
        with pytest.raises(ValueError, match="ambiguous: urllib3 reads host 'localhost' port 9"):
            parse_endpoint("http://localhost:9")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"auth": "user"}, "not a plain"),
        ({"query": ""}, "not a plain"),
        ({"fragment": "x"}, "not a plain"),
        ({"path": "/x"}, "not a plain"),
        ({"scheme": "https"}, "not a plain"),
        ({"port": 0}, "outside 1 to 65535"),
        ({"port": 65536}, "outside 1 to 65535"),
    ],
)
def test_what_urllib3_finds_is_checked_too(
    monkeypatch: pytest.MonkeyPatch, change: dict[str, Any], reason: str
) -> None:
    """The checks on the raw string leave urllib3 none of these to find; should it find one, it is refused."""

    def changed(url: str) -> Url:
        return parse_url(url)._replace(**change)

    monkeypatch.setattr(_endpoint, "parse_url", changed)
    with pytest.raises(ValueError, match=reason):
        parse_endpoint("http://localhost:9")
