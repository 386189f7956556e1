"""Import rules between the packages, checked on the source (an ast walk)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package → packages it must never import
FORBIDDEN = {
    "channels": ("engine", "designer", "flask"),
    "engine": ("designer", "flask"),
    "engine/spec": ("engine.store", "engine.worker.runner", "engine.runtime", "sqlalchemy"),
    "engine/runtime": ("engine.store", "engine.worker.runner", "sqlalchemy"),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_rules(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            for banned in FORBIDDEN[package]:
                if name == banned or name.startswith(banned + "."):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_rules_see_real_imports() -> None:
    """The walk finds imports at all (a rule that checks nothing would always pass)."""
    assert "engine.spec.conditions" in _imports(ROOT / "engine" / "runtime" / "interpreter.py")


# --- no import circles ---------------------------------------------------------------------------


def _engine_module_graph() -> dict[str, set[str]]:
    """Module → engine modules it imports, at the top or inside a function (a deferred import
    that only hides a circle is still one)."""
    modules = {}
    for path in sorted((ROOT / "engine").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_engine_modules_import_no_circle() -> None:
    import networkx as nx

    graph = nx.DiGraph([(a, b) for a, targets in _engine_module_graph().items() for b in targets])
    circles = [" → ".join([*c, c[0]]) for c in nx.simple_cycles(graph)]
    assert not circles, "\n".join(circles)


def test_the_circle_check_sees_deferred_imports() -> None:
    # engine.policy.loading imports engine.policy.pressure inside a function only
    assert "engine.policy.pressure" in _engine_module_graph()["engine.policy.loading"]


# --- outgoing connections ------------------------------------------------------------------------

# Modules that open connections to another host. Everything else that calls out (any provider a
# later change adds) must go through channels.pinned_http, whose connections pass the address
# guard; a module that imported a client library directly would reach whatever its URL names.
NETWORK_CLIENTS = ("http.client", "urllib.request", "urllib3", "requests", "httpx", "aiohttp")
SOCKET_OPENERS = frozenset({"socket", "create_connection", "socketpair", "fromfd"})
MAY_CONNECT = {
    "channels/netguard.py": "the guard itself: vets the address, then connects to it",
    "channels/pinned_http.py": "the one HTTP transport, over netguard's pinned connections",
    # SMTP, not HTTP: one relay the operator names, never an address from data
    "channels/email_smtp.py": "smtplib",
    # a TCP connect to that same relay, for /api/health; no data is sent
    "engine/service_health.py": "socket.create_connection",
    # UDP datagrams to 127.0.0.1 only, the ports this machine's workers registered (SQLite wake)
    "engine/worker/wake.py": "socket.socket",
}


def _connections(path: Path) -> list[str]:
    """What in `path` can open a connection: client imports, socket constructors, smtplib."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for name in _imports(path):
        if name == "smtplib" or any(name == c or name.startswith(c + ".") for c in NETWORK_CLIENTS):
            found.append(f"imports {name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("urllib", "http"):
            found += [f"imports {node.module}.{a.name}" for a in node.names if a.name != "parse"]
        elif isinstance(node, ast.ImportFrom) and node.module == "socket":
            found += [f"imports socket.{a.name}" for a in node.names if a.name in SOCKET_OPENERS]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "socket"
            and node.attr in SOCKET_OPENERS
        ):
            found.append(f"calls socket.{node.attr} (line {node.lineno})")
    return found


def test_outgoing_connections_go_through_the_guarded_transport() -> None:
    offenders = []
    for package in ("channels", "engine", "designer"):
        for path in sorted((ROOT / package).rglob("*.py")):
            where = str(path.relative_to(ROOT))
            if where not in MAY_CONNECT:
                offenders += [f"{where} {what}" for what in _connections(path)]
    assert not offenders, (
        "send HTTP through channels.pinned_http.Transport (the address guard):\n"
        + "\n".join(offenders)
    )


def test_the_connection_check_sees_real_connections() -> None:
    """The exempt modules are caught by the walk (a check that finds nothing would always pass)."""
    assert "imports http.client" in _connections(ROOT / "channels" / "pinned_http.py")
    assert any("socket.socket" in c for c in _connections(ROOT / "channels" / "netguard.py"))
    assert _connections(ROOT / "channels" / "email_smtp.py") == ["imports smtplib"]
