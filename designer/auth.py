"""Sign-in, roles, CSRF and the audit log of the designer.

Roles, from least to most: viewer (reads everything), marketer (edits, simulates, publishes,
pauses), admin (also users and settings). Every designer route declares the least role it needs
with `@requires(role)`; a test walks the URL map to check that none is left open.

CSRF: every state-changing request outside the API (which uses an API key, never cookies) and
the public pages must carry the session's token, in the form field `csrf_token` or the
`X-CSRF-Token` header.
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    abort,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from marshmallow import validate
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from designer import throttle
from designer.forms import Choice, Flag, Form, Secret, Text, parse
from designer.forms import query as query_values
from designer.i18n import gettext as _
from designer.i18n import ngettext
from engine.store.models import USER_ROLES, AuditEntry, User

F = TypeVar("F", bound=Callable[..., Any])

RANK = {role: i for i, role in enumerate(("viewer", "marketer", "admin"))}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# Endpoints that change nothing for a signed-in user or authenticate by other means.
# Public pages (signed links, site keys), the API (API key) and provider callbacks (signed).
CSRF_EXEMPT_PREFIXES: tuple[str, ...] = ("api", "public", "hooks.")
MIN_PASSWORD = 10

auth = Blueprint("auth", __name__)


class LoginForm(Form):
    username = Text(128, load_default="")
    password = Secret(load_default="")


class PasswordForm(Form):
    current = Secret(load_default="")
    new = Secret(load_default="")
    confirm = Secret(load_default="")


class NewUserForm(Form):
    # Letters (any script), digits, dots and dashes.
    username = Text(
        128, required=True, validate=validate.Regexp(r"^(?:[^\W_]|[.-])+$", error="username")
    )
    role = Choice(USER_ROLES, load_default="viewer")
    name = Text(200, load_default=None)

    def words(self) -> dict[str, str]:
        return {"username": _("A username is letters, digits, dots and dashes.")}


class UserChangeForm(Form):
    role = Choice(USER_ROLES, load_default=None)
    disabled = Flag(load_default=None)


def hash_password(password: str) -> str:
    return generate_password_hash(password)


@functools.cache
def _dummy_hash() -> str:
    """A hash of the same method and cost as real ones, checked when the name is unknown or
    disabled: every sign-in then costs one password hash, so timing does not tell names apart."""
    return hash_password(secrets.token_urlsafe(16))


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_PASSWORD:
        return ngettext(
            "A password needs at least %(num)s character.",
            "A password needs at least %(num)s characters.",
            MIN_PASSWORD,
        )
    return None


def create_user(
    engine: Engine,
    username: str,
    role: str,
    password: str | None = None,
    name: str | None = None,
    language: str | None = None,
) -> tuple[User, str]:
    """Create a user; with no password, a one-time password is generated (and returned)."""
    if role not in USER_ROLES:
        raise ValueError(f"unknown role '{role}': use one of {', '.join(USER_ROLES)}")
    generated = password is None
    password = password or secrets.token_urlsafe(12)
    with Session(engine, expire_on_commit=False) as db, db.begin():
        if db.scalar(select(User.id).where(User.username == username)) is not None:
            raise ValueError(f"user '{username}' already exists")
        user = User(
            username=username,
            role=role,
            name=name,
            language=language,
            password_hash=hash_password(password),
            must_change_password=generated,
        )
        db.add(user)
    return user, password


def new_one_time_password(user: User) -> str:
    """Give `user` a generated password that the next sign-in must change (as the first
    admin's); the user's open sessions end, since they carry the old hash's tail."""
    password = secrets.token_urlsafe(12)
    user.password_hash = hash_password(password)
    user.must_change_password = True
    return password


def ensure_first_admin(engine: Engine) -> str | None:
    """With no user at all, create `admin` with a one-time password and return it."""
    with Session(engine) as db:
        if db.scalar(select(User.id).limit(1)) is not None:
            return None
    _user, password = create_user(engine, "admin", "admin")
    return password


def audit(
    db: Session, action: str, kind: str, target: str | None, actor: str | None = None,
    **details: Any,
) -> None:  # fmt: skip
    """Append to the audit log, in the caller's transaction, as the signed-in user (or `actor`:
    the name a failed sign-in tried)."""
    user = getattr(g, "user", None)
    if actor is None:
        actor = user.username if user is not None else "system"
    db.add(
        AuditEntry(
            username=actor[:64],
            action=action,
            target_kind=kind,
            target_id=target,
            details=details,
        )
    )


def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def _wants_json() -> bool:
    return request.is_json or request.accept_mimetypes.best == "application/json"


def _check_csrf() -> Any:
    if request.method in SAFE_METHODS:
        return None
    endpoint = request.endpoint or ""
    if endpoint.startswith(CSRF_EXEMPT_PREFIXES) or endpoint == "static":
        return None
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token") or ""
    expected = session.get("csrf")
    if isinstance(expected, str) and hmac.compare_digest(sent, expected):
        return None
    if _wants_json():
        body = {"error": {"code": "csrf", "message": _("Session expired: reload the page.")}}
        return jsonify(body), 400
    abort(400, _("The form expired or came from another site: reload the page and try again."))


def _load_user() -> None:
    g.user = None
    user_id = session.get("user_id")
    if user_id is None:
        return
    from designer import parcours

    with Session(parcours().engine) as db:
        user = db.get(User, user_id)
        if user is None or user.disabled or session.get("pw") != user.password_hash[-12:]:
            session.clear()  # deleted, disabled, or password changed elsewhere: sign out
            return
        db.expunge(user)
    g.user = user


def requires(role: str) -> Callable[[F], F]:
    """The least role a view needs; signed-out users go to the sign-in page (JSON: 401)."""
    if role not in RANK:
        raise ValueError(role)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            user = g.get("user")
            if user is None:
                if _wants_json():
                    body = {"error": {"code": "login", "message": _("Please sign in again.")}}
                    return jsonify(body), 401
                return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
            if user.must_change_password and request.endpoint != "auth.password":
                return redirect(url_for("auth.password"))
            if RANK[user.role] < RANK[role]:
                if _wants_json():
                    body = {
                        "error": {"code": "forbidden", "message": _("Your role cannot do this.")}
                    }
                    return jsonify(body), 403
                abort(403, _("Your role (%(role)s) cannot do this.", role=_(user.role)))
            return view(*args, **kwargs)

        wrapped.required_role = role  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]

    return decorate


def can(role: str) -> bool:
    """In templates: may the signed-in user do what `role` may?"""
    user = g.get("user")
    return user is not None and RANK[user.role] >= RANK[role]


def _safe_next(target: str | None) -> str:
    # only a path on this site: never an absolute URL or //host (open redirect)
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("scenarios.index")
    parts = urlsplit(target)
    return parts.path + (f"?{parts.query}" if parts.query else "")


@auth.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Sign in with a username and password."""
    from designer import parcours

    state = parcours()
    error = None
    username = ""
    if request.method == "POST":
        asked = query_values(LoginForm(), request.form)
        username, password = asked["username"], asked["password"]
        # The address the server sees: behind a proxy, PARCOURS_TRUSTED_PROXIES says how many
        # X-Forwarded-For hops to believe (ProxyFix); a client cannot pick its own otherwise.
        address = request.remote_addr or "unknown"
        with Session(state.engine) as db, db.begin():
            wait = throttle.reserve(db.connection(), username, address, state.clock.now())
            if wait:
                _audit_failure(db, username, address, "throttled")
        if wait:
            error = ngettext(
                "Too many failed attempts: try again in %(num)s second.",
                "Too many failed attempts: try again in %(num)s seconds.",
                wait,
            )
            page = render_template("login.html", error=error, username=username)
            return page, 429, {"Retry-After": str(wait)}
        with Session(state.engine) as db, db.begin():
            user = db.scalar(select(User).where(User.username == username))
            usable = user is not None and not user.disabled
            stored = user.password_hash if user is not None and usable else _dummy_hash()
            if check_password_hash(stored, password) and user is not None and usable:
                throttle.signed_in(db.connection(), username, address)
                user.last_login_at = state.clock.now()
                session.clear()
                session["user_id"] = user.id
                session["pw"] = user.password_hash[-12:]
                if user.language:
                    session["lang"] = user.language
                session.permanent = True
                g.user = user
                audit(db, "login", "session", user.username)
                return redirect(_safe_next(request.args.get("next")))
            reason = "unknown" if user is None else "disabled" if user.disabled else "wrong"
            _audit_failure(db, username, address, reason)
        error = _("Unknown username or wrong password.")
    return render_template("login.html", error=error, username=username), (401 if error else 200)


def _audit_failure(db: Session, username: str, address: str, reason: str) -> None:
    # The name tried and why it failed; never the password, which may be another account's.
    audit(db, "login_failed", "session", username[:128], actor=username, reason=reason,
          address=address)  # fmt: skip


@auth.post("/logout")
@requires("viewer")
def logout() -> Any:
    """Sign out."""
    session.clear()
    return redirect(url_for("auth.login"))


@auth.route("/account/password", methods=["GET", "POST"])
@requires("viewer")
def password() -> Any:
    """Choose a new password (required after a generated one)."""
    from designer import parcours

    error = None
    if request.method == "POST":
        asked = query_values(PasswordForm(), request.form)
        current, new = asked["current"], asked["new"]
        with Session(parcours().engine) as db, db.begin():
            user = db.get(User, g.user.id)
            assert user is not None
            if not check_password_hash(user.password_hash, current):
                error = _("The current password is wrong.")
            elif new != asked["confirm"]:
                error = _("The two new passwords differ.")
            else:
                error = password_problem(new)
            if error is None:
                user.password_hash = hash_password(new)
                user.must_change_password = False
                session["pw"] = user.password_hash[-12:]
                audit(db, "password", "user", user.username)
        if error is None:
            flash(_("Password changed."), "ok")
            return redirect(url_for("scenarios.index"))
    return render_template("password.html", error=error), (400 if error else 200)


@auth.route("/users", methods=["GET", "POST"])
@requires("admin")
def users() -> Any:
    """List users; create one with a one-time password."""
    from designer import parcours

    engine = parcours().engine
    created = None
    error = None
    if request.method == "POST":
        asked, problems = parse(NewUserForm(), request.form)
        username = asked.get("username", "")
        if problems:
            error = " ".join(problems.values())
        elif _user_exists(engine, username):
            error = _("The user %(name)s already exists.", name=username)
        else:
            role = asked["role"]
            _user, created = create_user(engine, username, role, name=asked["name"])
            with Session(engine) as db, db.begin():
                audit(db, "create", "user", username, role=role)
    with Session(engine) as db:
        everyone = db.scalars(select(User).order_by(User.username)).all()
    return render_template(
        "users.html", users=everyone, created=created, error=error, roles=USER_ROLES
    ), (400 if error else 200)


@auth.post("/users/<int:user_id>")
@requires("admin")
def update_user(user_id: int) -> Any:
    """Change a user's role, or disable / enable the account."""
    from designer import parcours

    with Session(parcours().engine) as db, db.begin():
        user = db.get(User, user_id)
        if user is None:
            abort(404)
        asked = query_values(UserChangeForm(), request.form)
        role = asked["role"]
        if role is not None and role != user.role:
            if user.id == g.user.id:
                abort(400, _("You cannot change your own role."))
            user.role = role
            audit(db, "role", "user", user.username, role=role)
        disabled = asked["disabled"]
        if disabled is not None:
            if user.id == g.user.id and disabled:
                abort(400, _("You cannot disable your own account."))
            user.disabled = disabled
            audit(db, "disable" if disabled else "enable", "user", user.username)
    return redirect(url_for("auth.users"))


def _user_exists(engine: Engine, username: str) -> bool:
    with Session(engine) as db:
        return db.scalar(select(User.id).where(User.username == username)) is not None


class _SessionInterface(SecureCookieSessionInterface):
    """The signed session cookie, refreshed (its 12 hours start again) only by the pages a
    person opens. A stylesheet, an icon or a poll that the browser sent with the previous
    cookie, answered after a page that changed the session (`?lang=fr`, a sign-in), would
    otherwise write the previous session back."""

    def should_set_cookie(self, app: Flask, session: Any) -> bool:
        if session.modified:
            return True
        if request.endpoint is None or request.endpoint.rsplit(".", 1)[-1] == "static":
            return False
        if request.headers.get("Sec-Fetch-Dest", "document") != "document":
            return False  # fetched by a page's script, not opened
        return bool(super().should_set_cookie(app, session))


def init_app(app: Flask) -> None:
    app.session_interface = _SessionInterface()
    # Flask's defaults hold these keys already (SameSite None, 31 days): set, not setdefault.
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["PERMANENT_SESSION_LIFETIME"] = 12 * 3600
    _dummy_hash()  # computed once per process, before the first sign-in
    app.before_request(_load_user)
    app.before_request(_check_csrf)
    app.jinja_env.globals.update(csrf_token=csrf_token, can=can)
    app.register_blueprint(auth)
