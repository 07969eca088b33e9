"""Optional GeoIP (IDP_GEOIP_DB): with a MaxMind-format City database (written here by
mmdb-writer, read by maxminddb as a GeoLite2 file would be), sign-in rows and alerts show the
place, and "new network" compares countries; without it nothing changes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet
from sqlalchemy import select

from idp.config import ConfigError, Settings
from idp.extensions import db
from idp.security import geoip
from idp.security.alerts import network_key
from idp.security.models import SecurityAlert
from tests.helpers import login, make_user, same_device

LAPTOP = "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36"


def _place(country: str, code: str, city: str | None = None) -> dict:
    record = {"country": {"iso_code": code, "names": {"en": country}}}
    if city:
        record["city"] = {"names": {"en": city}}
    return record


@pytest.fixture
def city_db(tmp_path: Path) -> Path:
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-City", ipv4_compatible=True)
    writer.insert_network(IPSet(["10.1.0.0/16"]), _place("United States", "US", "Boston"))
    writer.insert_network(IPSet(["10.2.0.0/16"]), _place("United States", "US", "Chicago"))
    writer.insert_network(IPSet(["172.16.0.0/12"]), _place("Germany", "DE", "Berlin"))
    writer.insert_network(IPSet(["2001:db8::/32"]), _place("France", "FR"))
    path = tmp_path / "GeoLite2-City.mmdb"
    writer.to_db_file(str(path))
    return path


@pytest.fixture
def with_geoip(ctx, city_db, monkeypatch):
    runtime = ctx.extensions["idp"]
    monkeypatch.setattr(runtime, "settings",
                        dataclasses.replace(runtime.settings, geoip_db=city_db))
    return ctx


def _browser(app, ip: str, device=None):
    """A test client from `ip`; with `device` (another client), a window of that browser (its
    device cookie), so that only the network rules speak."""
    http = app.test_client()
    http.environ_base.update({"REMOTE_ADDR": ip, "HTTP_USER_AGENT": LAPTOP})
    if device is not None:
        same_device(device, http)
    return http


def test_lookup(with_geoip):
    boston = geoip.lookup("10.1.2.3")
    assert (boston.country_code, boston.country, boston.city) == ("US", "United States",
                                                                  "Boston")
    assert str(boston) == "Boston, United States"
    assert str(geoip.lookup("2001:db8:1::5")) == "France"
    assert geoip.lookup("8.8.8.8") is None and geoip.lookup("not an ip") is None
    assert geoip.lookup(None) is None
    assert network_key("10.1.2.3") == network_key("10.2.9.9") == "country:US"
    assert network_key("8.8.8.8") == "8.8.8.0/24"  # unknown to the database: the prefix


def test_unset_means_no_lookup_and_prefix_networks(ctx):
    assert ctx.extensions["idp"].settings.geoip_db is None
    assert geoip.lookup("10.1.2.3") is None
    assert network_key("10.1.2.3") == "10.1.2.0/24"


def test_a_new_country_is_a_new_network_and_the_same_country_is_not(with_geoip, mailbox):
    user = make_user()
    assert login(first := _browser(with_geoip, "10.1.2.3")).status_code == 302
    assert login(_browser(with_geoip, "10.2.3.4", device=first)).status_code == 302
    # another /24, same country: not new (and no simultaneous alert: one "network")
    assert db.session.execute(select(SecurityAlert)).first() is None
    assert mailbox.to(user.email) == []
    assert login(_browser(with_geoip, "172.16.9.4", device=first)).status_code == 302
    alert = db.session.execute(select(SecurityAlert)).scalars().first()
    assert "new_network" in alert.detail["reasons"] and "new_device" not in alert.detail["reasons"]
    assert alert.detail["country"] == "Germany" and alert.detail["city"] == "Berlin"
    [mail] = mailbox.to(user.email)
    assert "172.16.9.4 (Berlin, Germany)" in mailbox.body(mail)


def test_activity_and_alerts_pages_show_the_place(with_geoip, mailbox):
    app = with_geoip
    make_user()
    http = _browser(app, "10.1.2.3")
    assert login(http).status_code == 302
    page = http.get("/account/activity")
    assert "Location" in page.text and "Boston, United States" in page.text
    assert login(_browser(app, "172.16.9.4")).status_code == 302
    make_user("sec.officer", npi=None, role="security")
    staff = _browser(app, "10.1.2.3")
    login(staff, "sec.officer")
    alerts = staff.get("/admin/alerts")
    assert alerts.status_code == 200 and "Berlin, Germany" in alerts.text
    from idp.accounts.service import find_by_login

    user_page = staff.get(f"/admin/users/{find_by_login('drsmith').id}")
    assert user_page.status_code == 200 and '<td class="place">Berlin, Germany</td>' in \
        user_page.text and '<td class="place">Boston, United States</td>' in user_page.text


def test_without_geoip_the_pages_show_no_location(ctx):
    make_user()
    http = _browser(ctx, "10.1.2.3")
    login(http)
    page = http.get("/account/activity")
    assert page.status_code == 200 and "Location" not in page.text


def test_configuration_is_checked(tmp_path: Path, env: dict[str, str]):
    with pytest.raises(ConfigError, match="IDP_GEOIP_DB"):
        Settings.from_env({**env, "IDP_GEOIP_DB": str(tmp_path / "missing.mmdb")})
    (tmp_path / "x.mmdb").write_bytes(b"")
    assert Settings.from_env({**env, "IDP_GEOIP_DB": str(tmp_path / "x.mmdb")}).geoip_db == \
        tmp_path / "x.mmdb"
