"""``/docs`` and ``/redoc`` work without internet: each page and everything it loads comes from
this server (the assets are the files of the ``fastapi-offline`` package, byte for byte), the
assets are cacheable for a year, and the OpenAPI document is read from the server too."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from importlib.resources import files
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_api import PASSWORDS  # tests/http is on sys.path

from adapters.http import docs
from adapters.server.bootstrap import Server, build
from adapters.server.settings import load_settings

PACKAGE_FILES = files(docs.ASSETS_PACKAGE) / "static"


class References(HTMLParser):
    """Every URL a page makes the browser load: scripts, stylesheets, icons, images, frames,
    ReDoc's ``spec-url``."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.others: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "script":
            if "src" in found:
                self.scripts.append(found["src"])
            else:
                self._in_script = True
        elif tag == "link" and "stylesheet" in found.get("rel", ""):
            self.styles.append(found["href"])
        elif tag == "link" and "href" in found:
            self.others.append(found["href"])
        elif tag == "redoc":
            self.others.append(found["spec-url"])
        for name in ("src", "srcset", "data", "poster", "background"):
            if tag != "script" and name in found:
                self.others.append(found[name])

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts.append(data)

    @property
    def loaded(self) -> list[str]:
        return self.scripts + self.styles + self.others


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return build(load_settings(data_dir=tmp_path, smtp_listen_port=0), demo_passwords=PASSWORDS)


@pytest.fixture
def client(server: Server) -> Iterator[TestClient]:
    # No credentials anywhere here: the pages are public, as /openapi.json is.
    with TestClient(server.app) as c:
        yield c


def page(client: TestClient, path: str) -> References:
    r = client.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-cache"
    # Not a single other host named anywhere on the page, nor allowed by its CSP.
    assert not re.search(r"https?:|//[\w.-]", r.text), r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and not re.search(r"https?:|\*|//", csp), csp
    found = References()
    found.feed(r.text)
    for url in found.loaded:
        assert url.startswith("/") and not url.startswith("//"), url
    return found


def check_asset(client: TestClient, url: str, media_type: str) -> None:
    name = url.rsplit("/", 1)[-1]
    expected = (PACKAGE_FILES / name).read_bytes()
    r = client.get(url, headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200, (url, r.text)
    assert r.content == expected, f"{url} is not the package's {name}"
    assert r.headers["content-type"].startswith(media_type)
    assert "content-encoding" not in r.headers
    cache = r.headers["cache-control"]
    assert "max-age=31536000" in cache and "immutable" in cache and "public" in cache
    assert r.headers["x-content-type-options"] == "nosniff"
    etag = r.headers["etag"]
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    # Text compressed for a browser that takes gzip: the same bytes once decoded.
    packed = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert packed.content == expected and "Accept-Encoding" in packed.headers["vary"]
    if not media_type.startswith("image/"):
        assert packed.headers["content-encoding"] == "gzip"
        assert int(packed.headers["content-length"]) < len(expected) / 2


def test_swagger_ui_loads_everything_from_this_server(client: TestClient) -> None:
    found = page(client, "/docs")
    assert [u.rsplit("/", 1)[-1] for u in found.scripts] == ["swagger-ui-bundle.js"]
    assert [u.rsplit("/", 1)[-1] for u in found.styles] == ["swagger-ui.css"]
    for url in found.scripts:
        check_asset(client, url, "text/javascript")
    for url in found.styles:
        check_asset(client, url, "text/css")
    for url in found.others:
        check_asset(client, url, "image/png")
    # The OpenAPI document Swagger UI is told to read: this server's, with the API in it.
    (script,) = found.inline_scripts
    urls = re.findall(r"\burl: '([^']*)'", script)
    assert urls == ["/openapi.json"], script
    assert "validatorUrl" in script and '"validatorUrl": null' in script
    document = client.get(urls[0])
    assert document.status_code == 200
    assert "/api/v2/me/interactions/{interaction_id}" in document.json()["paths"]


def test_redoc_loads_everything_from_this_server(client: TestClient) -> None:
    found = page(client, "/redoc")
    assert [u.rsplit("/", 1)[-1] for u in found.scripts] == ["redoc.standalone.js"]
    for url in found.scripts:
        check_asset(client, url, "text/javascript")
    specs = [u for u in found.others if not u.startswith(docs.ASSETS_PATH)]
    assert specs == ["/openapi.json"]
    assert client.get(specs[0]).json()["openapi"].startswith("3.")
    for url in found.others:
        if url.startswith(docs.ASSETS_PATH):
            check_asset(client, url, "image/png")


def test_asset_urls_carry_their_digest(client: TestClient) -> None:
    """An asset's URL changes when its bytes do, so a year's caching never serves an old file;
    a digest or a name the server does not have is a 404 in the seed's shape."""
    url = page(client, "/docs").scripts[0]
    digest = url.split("/")[-2]
    assert re.fullmatch(r"[0-9a-f]{16}", digest)
    stale = url.replace(digest, "0" * 16)
    for wrong in (stale, f"{docs.ASSETS_PATH}/{digest}/core.py", f"{docs.ASSETS_PATH}/x/y"):
        r = client.get(wrong)
        assert r.status_code == 404, wrong
        assert r.json()["status"] == "error" and "documentation asset" in str(r.json())
    assert client.head(url).status_code == 200


def test_a_root_path_prefixes_every_url(server: Server) -> None:
    """Behind a proxy that mounts the server under a prefix, the pages name it everywhere."""
    with TestClient(server.app, root_path="/gws") as client:
        r = client.get("/docs")
        found = References()
        found.feed(r.text)
        assert found.loaded and all(u.startswith("/gws/") for u in found.loaded), found.loaded
        assert "url: '/gws/openapi.json'" in found.inline_scripts[0]


def test_gzip_refused_with_quality_zero(client: TestClient) -> None:
    url = page(client, "/docs").styles[0]
    for refusal in ("gzip;q=0, identity", "identity", "br", "gzip; q=0.000"):
        r = client.get(url, headers={"Accept-Encoding": refusal})
        assert "content-encoding" not in r.headers, refusal
        assert r.content == (PACKAGE_FILES / "swagger-ui.css").read_bytes()
