"""The console's pages: which scope each needs, and how one is rendered.

A page is a server-rendered shell (Jinja2, autoescaped) and a script of ours that fills it by
calling the public API as the signed-in key; the API decides what the key may see or change.
The navigation lists only the pages the key's scopes reach, and a page the key may not use
answers 403 with a page that says which scope it needs, before any data is asked for.

Example::

    pages = ConsolePages(Path(__file__).parent)
    pages.render("overview", principal, session, seconds_left=3600)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from openmaas.auth.entities import Principal
from openmaas.auth.scopes import Scope, scopes_cover
from openmaas.auth.sessions import ConsoleSession

# The bundled charting library (`make console-assets` builds it from console/package-lock.json).
CHART_ASSET = Path("vendor") / "chart.umd.js"
# Every page: our own scripts, styles and data only (no inline script, nothing from elsewhere).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Page:
    name: str
    title: str
    path: str
    needs: Scope | None  # None: any signed-in key
    in_nav: bool = True


PAGES: tuple[Page, ...] = (
    Page("overview", "Overview", "/ui/", None),
    Page("model", "Model", "/ui/models/{name}", Scope.MODELS_READ, in_nav=False),
    Page("playground", "Playground", "/ui/playground", Scope.INFERENCE),
    Page("datasets", "Datasets", "/ui/datasets", Scope.TRAINING),
    Page("training", "Training", "/ui/training", Scope.TRAINING),
    Page("optimization", "Optimization", "/ui/optimization", Scope.TRAINING),
    Page("evaluations", "Evaluations", "/ui/evaluations", Scope.TRAINING),
    Page("usage", "Usage", "/ui/usage", None),
    Page("keys", "Keys", "/ui/keys", Scope.ADMIN),
    Page("audit", "Audit log", "/ui/audit", Scope.ADMIN),
)
PAGE_BY_NAME = {page.name: page for page in PAGES}


def may_open(principal: Principal, page: Page) -> bool:
    return page.needs is None or scopes_cover(principal.scopes, page.needs)


class ConsolePages:
    """Renders the console's templates from `root` (templates/ and static/ below it)."""

    def __init__(self, root: Path) -> None:
        self.static_dir = root / "static"
        self.environment = Environment(
            loader=FileSystemLoader(root / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )

    def assets_built(self) -> bool:
        return (self.static_dir / CHART_ASSET).is_file()

    def render_sign_in(self, message: str = "") -> str:
        return self.environment.get_template("sign_in.html").render(
            message=message, assets_built=self.assets_built()
        )

    def render(
        self,
        page: Page,
        principal: Principal,
        session: ConsoleSession,
        *,
        seconds_left: int,
        values: dict[str, Any] | None = None,
    ) -> str:
        """The page's HTML; a page `principal` may not open renders as the 403 page."""
        allowed = may_open(principal, page)
        template = f"{page.name}.html" if allowed else "forbidden.html"
        return self.environment.get_template(template).render(
            page=page,
            nav=[p for p in PAGES if p.in_nav and may_open(principal, p)],
            principal=principal,
            scopes=[scope.value for scope in principal.scopes],
            csrf_token=session.csrf_token,
            seconds_left=seconds_left,
            assets_built=self.assets_built(),
            values=values or {},
        )
