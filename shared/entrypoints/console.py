"""The operator console: HTML pages served by the app itself (auth level FUNCTION, like the API).

Runs (`/api/console`), one run (`/api/console/run?run=<correlation id>`), its report
(`/api/console/report?run=`), the cancel form (`POST /api/console/cancel`, through the cancel
API's own handling) and the refused events (`/api/console/refused`); console.js and console.css
under `/api/console/static/`.

Safety: every page is sent with a Content-Security-Policy that allows only the app's own script
and styles (no inline script), no framing, and forms only to the app. A cancel is a POST that
must carry the anti-forgery token of a double-submit pair: an HttpOnly, SameSite=Strict cookie
and the same value in the form; a cross-site page can neither read the cookie nor make the
browser send it. The browser's Origin and Sec-Fetch-Site, when present, must say same origin.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import TYPE_CHECKING

import azure.functions as func

from shared import bootstrap
from shared.domain.ids import InvalidId, RunId
from shared.entrypoints import http_api

if TYPE_CHECKING:
    from shared.domain.runs import RefusedEvent
    from shared.entrypoints.console_pages import Page
    from shared.services.console_views import RunView

# The use cases (shared.services) and the pages (console_pages, with the domain's run model) are
# imported where first used, as in http_api: the worker indexes the app without them (cold start).

log = logging.getLogger(__name__)

bp = func.Blueprint()

HTML = "text/html"
STATIC_FOLDER = Path(__file__).with_name("console_static")
STATIC_FILES = {"console.js": "text/javascript", "console.css": "text/css"}
CSRF_COOKIE = "console_csrf"
CSRF_FORM_FIELD = "csrf"
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_FORM_BYTES = 16 * 1024
PAGE_SIZE = 25
REFUSED_SHOWN = 200
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Links carry the caller's own `code`: never hand it to another site in a Referer. (Not
    # no-referrer: browsers then send `Origin: null` even on the console's own forms.)
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class ConsoleRefusal(Exception):
    """A console request refused with a status and words for the page."""

    def __init__(self, status: HTTPStatus, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


# The pages -----------------------------------------------------------------------------------


@bp.function_name("console_runs")
@bp.route(route="console", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def console_runs(req: func.HttpRequest) -> func.HttpResponse:
    """Every run, newest first, filterable by configuration and status, paged."""
    return _guarded(_runs, req)


def _runs(req: func.HttpRequest, page: Page) -> func.HttpResponse:
    from shared.entrypoints.console_pages import runs_page
    from shared.services import console_views, run_queries

    services = bootstrap.container()
    configuration = req.params.get("configuration", "")[:200]
    status = req.params.get("status", "")[:50]
    token = req.params.get("continuationToken") or None
    wanted = run_queries.RunFilter(configuration=configuration or None, status=status or None)
    overview = console_views.runs_overview(
        services.ledger, wanted, PAGE_SIZE, token, page.now, _refused_events(REFUSED_SHOWN)
    )
    return _html(runs_page(page, overview, configuration, status, token), page)


@bp.function_name("console_run")
@bp.route(route="console/run", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def console_run(req: func.HttpRequest) -> func.HttpResponse:
    """One run: its timeline, machines, notes, cancel window and cancel forms."""
    return _guarded(_run, req)


def _run(req: func.HttpRequest, page: Page) -> func.HttpResponse:
    from shared.entrypoints.console_pages import run_page

    return _html(run_page(page, _run_view(req.params.get("run", ""))), page)


@bp.function_name("console_report")
@bp.route(route="console/report", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def console_report(req: func.HttpRequest) -> func.HttpResponse:
    """The run's report (the same document as GET /api/runs/{configuration}/{runName})."""
    return _guarded(_report, req)


def _report(req: func.HttpRequest, page: Page) -> func.HttpResponse:
    view = _run_view(req.params.get("run", ""))
    name = re.sub(r"[^A-Za-z0-9._-]", "_", view.run.run_id.run_name)
    return func.HttpResponse(
        json.dumps(view.report, indent=2, default=str),
        status_code=200,
        mimetype="application/json",
        headers={
            **SECURITY_HEADERS,
            "Content-Disposition": f'attachment; filename="run-{name}.json"',
        },
    )


@bp.function_name("console_cancel")
@bp.route(route="console/cancel", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def console_cancel(req: func.HttpRequest) -> func.HttpResponse:
    """The run page's "check" and "cancel" forms, answered by the cancel API's own handling."""
    return _guarded(_cancel, req)


def _cancel(req: func.HttpRequest, page: Page) -> func.HttpResponse:
    from shared.entrypoints.console_pages import CancelAnswerView, run_page

    form = _form(req)
    _check_same_origin(req)
    _check_token(req, form.get(CSRF_FORM_FIELD, ""))
    correlation_id = form.get("run", "")
    view = _run_view(correlation_id)
    intent = form.get("intent")
    if intent not in ("check", "cancel"):
        raise ConsoleRefusal(
            HTTPStatus.BAD_REQUEST, "Bad request", "intent must be check or cancel"
        )
    dry_run = intent == "check"
    reason = form.get("reason", "").strip()
    if not dry_run and (not reason or form.get("confirm") != "yes"):
        raise ConsoleRefusal(
            HTTPStatus.BAD_REQUEST,
            "Nothing was sent",
            "a cancel needs a reason and the confirmation box ticked",
        )
    response = http_api.cancel_for_console(
        req, view.run.run_id.text, reason or "console check (dry run)", dry_run
    )
    try:
        document = json.loads(response.get_body() or b"{}")
    except ValueError:
        document = None
    if not isinstance(document, dict):
        document = {"detail": "the cancel API's answer could not be read"}
    answer = CancelAnswerView(response.status_code, document, dry_run)
    # Read the run again: the cancel may have changed it.
    return _html(run_page(page, _run_view(view.run.run_id.text), answer), page)


@bp.function_name("console_refused")
@bp.route(route="console/refused", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def console_refused(req: func.HttpRequest) -> func.HttpResponse:
    """Every maintenance event the app refused, and why."""
    return _guarded(_refused, req)


def _refused(req: func.HttpRequest, page: Page) -> func.HttpResponse:
    from shared.entrypoints.console_pages import refused_page

    return _html(refused_page(page, _refused_events(REFUSED_SHOWN)), page)


@bp.function_name("console_static")
@bp.route(route="console/static/{file}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def console_static(req: func.HttpRequest) -> func.HttpResponse:
    """console.js and console.css."""
    name = req.route_params.get("file", "")
    mimetype = STATIC_FILES.get(name)
    if mimetype is None:
        return func.HttpResponse("not found", status_code=404, mimetype="text/plain")
    return func.HttpResponse(
        (STATIC_FOLDER / name).read_bytes(),
        status_code=200,
        mimetype=mimetype,
        charset="utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": "private, max-age=300"},
    )


# Shared steps --------------------------------------------------------------------------------


def _guarded(
    handler: Callable[[func.HttpRequest, Page], func.HttpResponse], req: func.HttpRequest
) -> func.HttpResponse:
    from shared.entrypoints.console_pages import Links, Page, message_page

    try:
        page = _page(req)
    except Exception:
        # The settings do not load: the handler meets the same error and says so in a page.
        page = Page(links=Links(base="/api/console"), now=datetime.now(UTC), caller="")
    try:
        return handler(req, page)
    except ConsoleRefusal as refusal:
        return _html(message_page(page, refusal.title, refusal.detail), page, refusal.status)
    except Exception as error:
        for kind, status, title in http_api.errors():
            if isinstance(error, kind):
                if status >= 500:
                    log.error("%s %s failed: %s", req.method, _without_query(req.url), error)
                return _html(message_page(page, title, str(error)), page, status)
        log.exception("%s %s failed unexpectedly", req.method, _without_query(req.url))
        return _html(
            message_page(
                page, "Unexpected error", "the page failed; the function logs have the details"
            ),
            page,
            HTTPStatus.INTERNAL_SERVER_ERROR,
        )


def _page(req: func.HttpRequest) -> Page:
    from shared.entrypoints.console_pages import Links, Page

    path = urllib.parse.urlsplit(req.url).path
    at = path.lower().find("/console")
    base = path[: at + len("/console")] if at >= 0 else "/api/console"
    token, _ = _csrf_cookie(req)
    return Page(
        links=Links(base=base, code=req.params.get("code") or None),
        now=bootstrap.container().clock.now(),
        caller=_who(req),
        csrf_token=token or secrets.token_urlsafe(32),
        https=urllib.parse.urlsplit(req.url).scheme == "https"
        or req.headers.get("x-forwarded-proto", "").lower() == "https",
    )


def _who(req: func.HttpRequest) -> str:
    """Who the page is for, as the platform says (App Service authentication), else the key."""
    if bootstrap.container().settings.platform_authentication:
        name = req.headers.get("x-ms-client-principal-name")
        if name:
            return f"Signed in as {name[:100]}"
        return "Not signed in (function key)"
    return "Function key (App Service authentication off)"


def _html(document: str, page: Page, status: HTTPStatus = HTTPStatus.OK) -> func.HttpResponse:
    secure = "; Secure" if page.https else ""
    cookie = (
        f"{CSRF_COOKIE}={page.csrf_token}; Path={page.links.base}; HttpOnly; SameSite=Strict"
        f"{secure}"
    )
    return func.HttpResponse(
        document,
        status_code=int(status),
        mimetype=HTML,
        charset="utf-8",
        headers={**SECURITY_HEADERS, "Set-Cookie": cookie},
    )


def _run_view(correlation_id: str) -> RunView:
    from shared.services import console_views

    if not correlation_id:
        raise ConsoleRefusal(HTTPStatus.BAD_REQUEST, "Which run?", "the run parameter is missing")
    try:
        run_id = RunId.parse(correlation_id)
    except InvalidId as e:
        raise ConsoleRefusal(HTTPStatus.BAD_REQUEST, "Invalid run id", str(e)) from e
    services = bootstrap.container()
    run = services.ledger.find_run(run_id)
    if run is None:
        raise ConsoleRefusal(
            HTTPStatus.NOT_FOUND, "Run not found", f"the ledger has no run {run_id.text}"
        )
    return console_views.run_view(
        run, services.ledger, services.reports, services.settings.policy.cancel_safety_margin
    )


def _refused_events(limit: int) -> Sequence[RefusedEvent]:
    from shared.services import console_views

    return console_views.refused_events(bootstrap.container().ledger, limit)


def _form(req: func.HttpRequest) -> dict[str, str]:
    raw = req.get_body() or b""
    if len(raw) > MAX_FORM_BYTES:
        raise ConsoleRefusal(HTTPStatus.BAD_REQUEST, "Bad request", "the form is too large")
    try:
        fields = urllib.parse.parse_qs(
            raw.decode("utf-8"), max_num_fields=20, strict_parsing=False, errors="strict"
        )
    except (UnicodeDecodeError, ValueError) as e:
        raise ConsoleRefusal(HTTPStatus.BAD_REQUEST, "Bad request", "the form is unreadable") from e
    return {key: values[0] for key, values in fields.items() if values}


def _check_same_origin(req: func.HttpRequest) -> None:
    """Browsers say where a request comes from; a cross-site one is refused outright."""
    site = req.headers.get("sec-fetch-site")
    if site is not None and site.lower() != "same-origin":
        raise _forgery(f"the form was sent from another site (Sec-Fetch-Site: {site[:30]})")
    origin = req.headers.get("origin")
    if origin is None:
        return
    own_hosts = {urllib.parse.urlsplit(req.url).netloc.lower()}
    host = req.headers.get("host")
    if host:
        own_hosts.add(host.lower())
    if urllib.parse.urlsplit(origin).netloc.lower() not in own_hosts:
        raise _forgery("the form was sent from another origin")


def _check_token(req: func.HttpRequest, sent: str) -> None:
    cookie, present = _csrf_cookie(req)
    if not present or cookie is None:
        raise _forgery("the anti-forgery cookie is missing; open the run page again")
    if not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise _forgery("the anti-forgery token does not match; open the run page again")


def _csrf_cookie(req: func.HttpRequest) -> tuple[str | None, bool]:
    """The anti-forgery token of the caller's cookie, if it has a well-formed one."""
    header = req.headers.get("cookie")
    if not header:
        return None, False
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None, False
    morsel = jar.get(CSRF_COOKIE)
    if morsel is None or not _TOKEN_SHAPE.fullmatch(morsel.value):
        return None, False
    return morsel.value, True


def _forgery(detail: str) -> ConsoleRefusal:
    log.warning("Console cancel refused by the anti-forgery check: %s", detail)
    return ConsoleRefusal(HTTPStatus.FORBIDDEN, "Refused: possible cross-site request", detail)


def _without_query(url: str) -> str:
    """A request URL fit for a log line: the query may carry a key (`?code=`)."""
    return url.split("?", 1)[0].split("#", 1)[0]
