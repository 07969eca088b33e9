"""The three demo relying parties share one stylesheet (clients/static/rp.css) and set only
their colour (their own static/brand.css): every page's stylesheet links must resolve."""

import re
import secrets

import pytest

from clients.ehr import create_app as ehr
from clients.portal import create_app as portal
from clients.smart_app import create_app as smart_app

ENV = {"PORTAL_CLIENT_ID": "portal", "PORTAL_CLIENT_SECRET": "s" * 32,
       "EHR_CLIENT_ID": "ehr", "EHR_CLIENT_SECRET": "s" * 32,
       "PORTAL_SECRET_KEY": secrets.token_urlsafe(32), "EHR_SECRET_KEY": secrets.token_urlsafe(32)}


@pytest.mark.parametrize(("factory", "base", "page"), [
    (portal, "http://127.0.0.1:8001", "/"),
    (ehr, "http://127.0.0.1:8002", "/"),
    (smart_app, "http://127.0.0.1:8003", "/"),
])
def test_each_page_links_the_shared_sheet_and_its_own_colour(factory, base, page):
    client = factory(dict(ENV)).test_client()
    html = client.get(page, base_url=base).get_data(as_text=True)
    links = re.findall(r'<link rel="stylesheet" href="([^"]+)"', html)
    assert any(link.endswith("/rp.css") for link in links), links
    assert any(link.endswith("/brand.css") for link in links), links
    sheets = {link: client.get(link, base_url=base) for link in links}
    for link, response in sheets.items():
        assert response.status_code == 200 and response.mimetype == "text/css", link
    shared = next(r for link, r in sheets.items() if link.endswith("/rp.css"))
    brand = next(r for link, r in sheets.items() if link.endswith("/brand.css"))
    assert b"var(--brand)" in shared.data and b"--brand:" in brand.data
