"""The Parcours web application: the designer (signed in), the JSON API and the public pages."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, jsonify, redirect, render_template, request, url_for
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from engine.config import Settings, load_settings
from engine.delivery.links import secret_key
from engine.policy.loader import load_policy_file
from engine.policy.model import Policy
from engine.runtime.clock import Clock, SystemClock
from engine.store.db import SQLITE_BEGIN, make_engine
from engine.store.models import Enrollment, JournalEntry, ScenarioRecord, Send
from engine.worker.versions import VersionCache

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024


@dataclass
class Parcours:
    """What the application shares between requests, in ``app.extensions["parcours"]``."""

    engine: Engine
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    # Set by the worker so that a posted event or a manual entry is handled at once.
    wake: Callable[[], None] | None = None
    versions: VersionCache = field(default_factory=VersionCache)
    # Key of signed links (double opt-in...); set by create_app from PARCOURS_SECRET_KEY.
    secret: str = ""
    # Start of the links put in messages. Never taken from the request's Host header: a forged
    # Host would put the attacker's site in a genuine confirmation email.
    public_url: str = ""
    _policy: tuple[tuple[int, int], Policy] | None = field(default=None, repr=False)

    def policy(self) -> Policy:
        """The workspace policy (`policy.yaml` beside the scenarios), re-read when it changes."""
        from engine.policy.loading import policy_path

        path = policy_path(self.settings)
        try:
            stat = path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = (0, -1)
        if self._policy is None or self._policy[0] != stamp:
            self._policy = (stamp, load_policy_file(path))
        return self._policy[1]

    def notify(self) -> None:
        """Wake the worker if one is attached; a failure here never fails the request."""
        if self.wake is None:
            return
        try:
            self.wake()
        except Exception:
            logger.exception("waking the worker failed")


class ApiError(Exception):
    """An error answered with `status`: under /api, /hooks and on the public JSON routes as an
    RFC 9457 problem (see `designer.rest`), on the designer's own JSON routes as
    ``{"error": {"code", "message", "field"}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})  # Retry-After of a 429...


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[Response, int]:
    """The JSON error answer of this request: a problem where `designer.rest` says so."""
    from designer import rest

    found = rest.handle_error(ApiError(status, code, message, field, headers))
    if found is not None:
        return found, status
    answer = jsonify({"error": {"code": code, "message": message, "field": field}})
    answer.headers.update(headers or {})
    return answer, status


def _on_api_error(exc: ApiError) -> tuple[Response, int]:
    return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)


def _on_http_error(exc: HTTPException) -> Any:
    from designer import rest

    found = rest.handle_error(exc)
    return exc if found is None else found  # Flask renders its usual page for the HTML side


def _on_unexpected(exc: Exception) -> Any:
    from designer import rest

    found = rest.handle_error(exc)
    if found is None:
        raise exc  # Flask logs it and answers 500 (or propagates it under test)
    return found


def _route_errors_first() -> None:
    """A wrong path or method under /api or /hooks is answered (404, 405) before any other
    check: those callers hold keys or signatures, never the session's CSRF token."""
    if request.routing_exception is not None and request.path.startswith(("/api/", "/hooks/")):
        raise request.routing_exception


# The designer loads only its own files: no inline script, no third-party origin (everything
# is vendored, so it also works offline).
DESIGNER_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PUBLIC_CSP = "default-src 'none'; style-src 'unsafe-inline'"
# Sent only when PARCOURS_PUBLIC_URL is https: over plain http (local development) a browser
# would otherwise refuse the site until max-age runs out.
HSTS = "max-age=31536000; includeSubDomains"


def parcours() -> Parcours:
    """The application's shared state, inside a request."""
    state: Parcours = current_app.extensions["parcours"]
    return state


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype == "text/html":
        public = (request.endpoint or "").startswith("public")  # every public_* blueprint
        response.headers.setdefault(
            "Content-Security-Policy", PUBLIC_CSP if public else DESIGNER_CSP
        )
        response.headers.setdefault("X-Frame-Options", "DENY")
    if request.endpoint != "static":
        response.headers.setdefault("Cache-Control", "no-store")
    if current_app.config["SESSION_COOKIE_SECURE"]:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response


def status_counts(parcours: Parcours) -> dict[str, Any]:
    """Worker status without personal data: active enrollments, recent sends, journal tail."""
    now = parcours.clock.now()
    with parcours.engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN: "DEFERRED"})  # read only: no write lock
        active = conn.execute(
            select(
                ScenarioRecord.id,
                ScenarioRecord.name,
                ScenarioRecord.status,
                func.count(Enrollment.id),
            )
            .join(
                Enrollment,
                (Enrollment.scenario_id == ScenarioRecord.id) & (Enrollment.status == "active"),
                isouter=True,
            )
            .group_by(ScenarioRecord.id, ScenarioRecord.name, ScenarioRecord.status)
            .order_by(ScenarioRecord.id)
        ).all()
        sends = conn.execute(
            select(Send.channel, func.count(Send.id))
            .where(Send.created_at >= now - timedelta(hours=24))
            .group_by(Send.channel)
            .order_by(Send.channel)
        ).all()
        journal = conn.execute(
            select(
                JournalEntry.at,
                JournalEntry.kind,
                JournalEntry.scenario_id,
                JournalEntry.step_id,
                JournalEntry.reason,
            )
            .order_by(JournalEntry.id.desc())
            .limit(20)
        ).all()
    return {
        "now": now,
        "scenarios": [
            {"id": r[0], "name": r[1], "status": r[2], "active": int(r[3])} for r in active
        ],
        "sends": [{"channel": r[0], "count": int(r[1])} for r in sends],
        "journal": [r._asdict() for r in journal],
    }


def create_app(
    settings: Settings | None = None, test_config: Mapping[str, Any] | None = None
) -> Flask:
    """Build the application: database engine, the `api` blueprint, JSON errors, status page."""
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config.from_mapping(MAX_CONTENT_LENGTH=MAX_BODY_BYTES)
    from designer.jsonbody import refuse_invalid_input

    # first of all hooks: the CSRF check reads the form, and no check should see a NUL
    app.before_request(refuse_invalid_input)
    app.before_request(_route_errors_first)
    # Key order carries meaning in a scenario document (the first step starts): keep it.
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.jinja_env.policies["json.dumps_kwargs"] = {"sort_keys": False}  # the tojson filter
    if test_config is not None:
        app.config.from_mapping(test_config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = secret_key(settings)
    if urlsplit(settings.public_base).scheme == "https":
        # the session (which holds the CSRF token) never travels over plain http
        app.config["SESSION_COOKIE_SECURE"] = True
    if settings.proxy_hops or settings.trusted_proxies:
        # request.remote_addr is then the client's address as the nearest proxies report it;
        # with PROXY_HOPS, the scheme and host too (redirects and external URLs behind nginx)
        hops = settings.proxy_hops
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops or settings.trusted_proxies, x_proto=hops, x_host=hops
        )
    # (designer.auth keeps the session cookie HttpOnly and SameSite=Lax; Secure just above)
    app.extensions["parcours"] = Parcours(
        make_engine(settings.db_url),
        settings,
        secret=app.config["SECRET_KEY"],
        public_url=settings.public_base,
    )

    from designer import auth, i18n
    from designer.api import api
    from designer.api_experiments import api_experiments
    from designer.api_identity import api_identity
    from designer.api_privacy import api_privacy
    from designer.api_reports import api_reports
    from designer.api_segments import api_segments
    from designer.contact_privacy import contact_privacy
    from designer.editor import editor
    from designer.experiments import experiments
    from designer.hooks import hooks
    from designer.insights import insights
    from designer.library import library
    from designer.offline import api_delivery
    from designer.onsite import public_onsite
    from designer.programs import programs
    from designer.public import public
    from designer.public_links import public_links
    from designer.push import public_push
    from designer.scenarios import scenarios
    from designer.segments import segments
    from designer.simulation import simulation

    i18n.init_app(app)
    auth.init_app(app)
    from designer import rest

    api_doc = rest.init_app(app, settings.public_base)
    api_doc.register_blueprint(api)
    api_doc.register_blueprint(api_segments)
    api_doc.register_blueprint(api_reports)
    api_doc.register_blueprint(api_experiments)
    api_doc.register_blueprint(api_privacy)
    api_doc.register_blueprint(api_identity)
    from designer.api_contacts import api_contacts

    api_doc.register_blueprint(api_contacts)
    from designer.api_events_bulk import api_events_bulk

    api_doc.register_blueprint(api_events_bulk)
    from designer.api_suppressions import api_suppressions

    api_doc.register_blueprint(api_suppressions)
    from designer.api_scenarios import api_scenarios

    api_doc.register_blueprint(api_scenarios)
    from designer.api_outbox import api_outbox

    api_doc.register_blueprint(api_outbox)
    app.register_blueprint(public)
    app.register_blueprint(public_links)
    app.register_blueprint(public_onsite)
    api_doc.register_blueprint(api_delivery)
    app.register_blueprint(hooks)
    app.register_blueprint(public_push)
    app.register_blueprint(scenarios)
    app.register_blueprint(editor)
    app.register_blueprint(insights)
    app.register_blueprint(simulation)
    app.register_blueprint(library)
    app.register_blueprint(segments)
    app.register_blueprint(programs)
    app.register_blueprint(contact_privacy)
    app.register_blueprint(experiments)
    from designer.metrics_view import metrics_view

    app.register_blueprint(metrics_view)
    from designer.keys import keys

    app.register_blueprint(keys)
    app.register_error_handler(ApiError, _on_api_error)
    app.register_error_handler(HTTPException, _on_http_error)
    app.register_error_handler(Exception, _on_unexpected)
    app.after_request(_security_headers)

    @app.get("/")
    def home() -> Any:
        """The designer starts on the list of journeys."""
        return redirect(url_for("scenarios.index"))

    @app.get("/status")
    @auth.requires("viewer")
    def status() -> str:
        """The worker's status, read only."""
        return render_template("status.html", **status_counts(app.extensions["parcours"]))

    return app
