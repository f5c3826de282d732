"""The console's pages render without the built assets (saying how to build them), escape what
they show, and list only the pages a key's scopes reach."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from openmaas.api.ui import routes
from openmaas.api.ui.pages import PAGE_BY_NAME, ConsolePages, may_open
from openmaas.auth.entities import Principal
from openmaas.auth.scopes import Scope
from openmaas.auth.sessions import ConsoleSession


def pages_without_assets(tmp_path: Path) -> ConsolePages:
    shutil.copytree(routes.ROOT / "templates", tmp_path / "templates")
    (tmp_path / "static").mkdir()
    return ConsolePages(tmp_path)


def test_without_the_built_assets_every_page_says_how_to_build_them(tmp_path: Path) -> None:
    pages = pages_without_assets(tmp_path)
    assert not pages.assets_built()
    assert "make console-assets" in pages.render_sign_in()
    who = Principal("default", 1, "abc", (Scope.ADMIN,))
    session = ConsoleSession(who.key_id, who.project, "csrf", expires_at=time.time() + 60)
    html = pages.render(PAGE_BY_NAME["overview"], who, session, seconds_left=60)
    assert "make console-assets" in html
    assert "chart.umd.js" not in html


def test_values_are_escaped_and_the_navigation_follows_the_scopes(tmp_path: Path) -> None:
    pages = pages_without_assets(tmp_path)
    reader = Principal("default", 2, "rdr", (Scope.INFERENCE, Scope.MODELS_READ))
    session = ConsoleSession(reader.key_id, reader.project, "csrf", expires_at=time.time() + 60)
    model = PAGE_BY_NAME["model"]
    html = pages.render(
        model, reader, session, seconds_left=60, values={"name": "<script>x</script>"}
    )
    assert "<script>x</script>" not in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html
    assert 'href="/ui/keys"' not in html  # admin only
    assert 'href="/ui/playground"' in html
    assert not may_open(reader, PAGE_BY_NAME["keys"])
    refused = pages.render(PAGE_BY_NAME["keys"], reader, session, seconds_left=60)
    assert "needs an API key with the <code>admin</code> scope" in refused
