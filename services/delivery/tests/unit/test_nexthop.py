"""The transport map and the relay: what each entry means, which one a domain gets, and the startup
errors that name the variable."""

from __future__ import annotations

import json
import os
import re

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from mailflow.cli.main import app
from mailflow_delivery.nexthop import NextHop, Router, parse_routes
from mailflow_delivery.settings import Settings


@pytest.mark.parametrize(
    "text, key, hop",
    [
        ("partner.test=mx.partner.test:2525", "partner.test", NextHop("map", "mx.partner.test", 2525, lookup_mx=True)),
        ("partner.test=[gw.partner.test]:587", "partner.test", NextHop("map", "gw.partner.test", 587, lookup_mx=False)),
        ("Partner.TEST.=[GW.partner.test]", "partner.test", NextHop("map", "gw.partner.test", None, lookup_mx=False)),
        ("partner.test=10.0.0.5:25", "partner.test", NextHop("map", "10.0.0.5", 25, lookup_mx=False)),  # an address: nothing to look up
        ("partner.test=[2001:db8::1]:25", "partner.test", NextHop("map", "2001:db8::1", 25, lookup_mx=False)),
        ("partner.test=2001:db8::1", "partner.test", NextHop("map", "2001:db8::1", None, lookup_mx=False)),  # no port: no brackets needed
        ("*.corp.test=[127.0.0.7]", "*.corp.test", NextHop("map", "127.0.0.7", None, lookup_mx=False)),
    ],
)
def test_an_entry_and_its_next_hop(text, key, hop):
    assert parse_routes(text) == {key: hop}


@pytest.mark.parametrize(
    "text, error",
    [
        ("partner.test", "expected domain=route"),
        ("partner.test=", "expected domain=route"),
        ("partner.test=host:0", "port must be a number from 1 to 65535"),
        ("partner.test=host:99999", "port must be a number from 1 to 65535"),
        ("partner.test=[host", "'[' without ']'"),
        ("partner.test=[host]x", "only ':port' may follow ']'"),
        ("partner.test=host:25:25", "not a domain name"),
        ("bad!.test=mx", "not a domain name"),
        ("a.test=mx a.test=[h]", "a.test has two routes"),
    ],
)
def test_a_bad_entry_is_named(text, error):
    with pytest.raises(ValueError, match=re.escape(error)) as exc:
        parse_routes(text)
    assert "entry " in str(exc.value)


def test_which_route_a_domain_takes():
    relay = NextHop("relay", "smtp.provider.test", 587, lookup_mx=False)
    routes = parse_routes("partner.test=[gw.partner.test]:25, *.corp.test=[10.0.0.9]\n  direct.test=mx  *.sub.corp.test=mx")
    router = Router(routes, relay)
    assert router.next_hop("partner.test") == NextHop("map", "gw.partner.test", 25, lookup_mx=False)
    assert router.next_hop("eu.corp.test") == NextHop("map", "10.0.0.9", None, lookup_mx=False)
    assert router.next_hop("x.sub.corp.test") == NextHop("mx", "x.sub.corp.test")  # the nearest wildcard wins
    assert router.next_hop("corp.test") is relay  # `*.corp.test` is for subdomains only
    assert router.next_hop("direct.test") == NextHop("mx", "direct.test")  # the exception to the relay
    assert router.next_hop("naver.test") is relay
    assert Router(routes).next_hop("naver.test") == NextHop("mx", "naver.test")  # no relay: the MX
    assert [str(router.next_hop(d)) for d in ("partner.test", "direct.test", "naver.test")] == [
        "map [gw.partner.test]:25",
        "mx",
        "relay [smtp.provider.test]:587",
    ]


def settings(**kw) -> Settings:
    return Settings(service_token="t", **kw)


@pytest.mark.parametrize(
    "kw, error",
    [
        ({"routes": "partner.test=[gw:x]"}, "routes\n  Value error, entry 'partner.test=[gw:x]'"),
        ({"relay_host": "smtp provider"}, "relay_host\n  Value error, 'smtp provider' is not a domain name"),
        ({"relay_host": "smtp.p.test", "relay_user": "u"}, "RELAY_USER and MAILFLOW_DELIVERY_RELAY_PASSWORD go together"),
        ({"relay_host": "smtp.p.test", "relay_user": "u", "relay_password": "hunter2", "relay_tls": "none"}, "RELAY_AUTH_IN_CLEAR=true"),
        ({"relay_port": 0}, "relay_port\n  Input should be greater than 0"),
    ],
)
def test_settings_refuse_a_relay_or_map_that_cannot_work(kw, error):
    with pytest.raises(ValidationError, match=re.escape(error)) as exc:
        settings(**kw)
    assert "hunter2" not in str(exc.value)  # the error never echoes the password


def test_relay_defaults_are_strict():
    s = settings(relay_host="smtp.provider.test", relay_user="u", relay_password="hunter2")
    assert (s.relay_port, s.relay_tls, s.relay_tls_verify, s.relay_auth_in_clear) == (587, "starttls", True, False)
    assert "hunter2" not in repr(s)
    settings(relay_host="[127.0.0.1]", relay_tls="none", relay_user="u", relay_password="p", relay_auth_in_clear=True)


def test_config_check_names_a_bad_map_entry_and_masks_the_relay_password(monkeypatch):
    for key in [k for k in os.environ if k.startswith("MAILFLOW_")]:
        monkeypatch.delenv(key)
    env = {
        "MAILFLOW_SERVICE_TOKEN": "t",
        "MAILFLOW_DELIVERY_RELAY_HOST": "smtp.provider.test",
        "MAILFLOW_DELIVERY_RELAY_USER": "mailflow",
        "MAILFLOW_DELIVERY_RELAY_PASSWORD": "relay-secret",
        "MAILFLOW_DELIVERY_ROUTES": "partner.test=[gw.partner.test]:25, broken.test=[gw",
    }
    result = CliRunner().invoke(app, ["config", "check", "--service", "delivery", "--json"], env=env)
    report = json.loads(result.output)
    assert result.exit_code == 1
    assert report["errors"] == ["MAILFLOW_DELIVERY_ROUTES: Value error, entry 'broken.test=[gw': '[gw': '[' without ']' (given: 'partner.test=[gw.partner.test]:25, broken.test=[gw') [delivery]"]
    shown = report["settings"]["delivery"]
    assert shown["MAILFLOW_DELIVERY_RELAY_PASSWORD"] == {"value": "****", "from": "env"} and "relay-secret" not in result.output
    assert shown["MAILFLOW_DELIVERY_RELAY_TLS"]["value"] == "starttls" and shown["MAILFLOW_DELIVERY_RELAY_PORT"]["value"] == 587
