"""`policy.yaml` and `channels.yaml` as developers commit them: every broken file, however
hostile, gives `file:line:col: error [code]` lines and exit status 1, never a traceback."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from designer.cli import cli
from engine.delivery.channel_config import load_channels
from engine.errors import ScenarioInvalid
from engine.policy.loader import load_policy_file
from engine.spec.yamlio import MAX_BYTES, MAX_DEPTH

POLICY_OK = "format_version: 1\ntopics: {news: News}\n"


def _deep(levels: int) -> str:
    return "{a: " * levels + "1" + "}" * levels


def _large(head: str) -> bytes:
    filler = "".join(f"# {'x' * 70}\n" for _ in range(MAX_BYTES // 72 + 10))
    return (head + filler).encode()


# name -> (file bytes, expected code, expected line, text the line must contain)
POLICY_CORPUS: dict[str, tuple[bytes, str, int, str]] = {
    "stray byte": (b"format_version: 1\ntopics: {news: caf\xe9}\n", "yaml.encoding", 2, "UTF-8"),
    "utf-16 with BOM": (POLICY_OK.encode("utf-16"), "yaml.encoding", 1, "UTF-16"),
    "utf-16 without BOM": (POLICY_OK.encode("utf-16-le"), "yaml.encoding", 1, "UTF-16"),
    "too deep": (
        f"format_version: 1\nweights: {_deep(MAX_DEPTH + 2)}\n".encode(), "yaml.limit", 2, "deeper"
    ),
    "too large": (_large(POLICY_OK), "yaml.limit", 0, "bytes"),
    "alias": (
        b"format_version: 1\ntopics: &t {news: News}\nweights: *t\n", "yaml.alias", 2, "Anchors"
    ),
    "custom tag": (b"format_version: 1\nspacing: !!python/name:os.system x\n", "yaml.tag", 2, ""),
    "duplicate key": (b"format_version: 1\nspacing: 1d\nspacing: 2d\n", "yaml.duplicate_key", 3, ""),
    "unknown key": (
        b"format_version: 1\nquiet_hour: []\n", "schema.unknown_field", 2, "did you mean 'quiet_hours'"
    ),
    "unknown nested key": (
        b"format_version: 1\ncaps:\n  - id: week\n    channels: [email]\n    max: 3\n    windw: 7d\n",
        "schema.unknown_field", 6, "did you mean 'window'",
    ),
    "wrong type": (b"format_version: 1\ncaps:\n  - {id: a, channels: [email], max: lots, per: day}\n",
                   "schema.invalid", 3, "caps.0.max"),
    "missing format_version": (b"topics: {news: News}\n", "schema.required", 1, "format_version"),
    "empty file": (b"# nothing yet\n", "schema.required", 1, "format_version"),
    "not a mapping": (b"- format_version\n- 1\n", "policy.invalid", 1, ""),
}  # fmt: skip

CHANNELS_CORPUS: dict[str, tuple[bytes, str, int, str]] = {
    "stray byte": (b"email:\n  provider: smtp\n  host: h\xff\n", "yaml.encoding", 3, "UTF-8"),
    "utf-16 with BOM": ("email:\n  provider: outbox\n".encode("utf-16"), "yaml.encoding", 1, ""),
    "utf-16 without BOM": ("email:\n  provider: outbox\n".encode("utf-16-be"), "yaml.encoding", 1, ""),
    "too deep": (f"email: {_deep(MAX_DEPTH + 2)}\n".encode(), "yaml.limit", 1, "deeper"),
    "too large": (_large("email:\n  provider: outbox\n"), "yaml.limit", 0, "bytes"),
    "alias": (b"email: &e {provider: outbox}\nsms: *e\n", "yaml.alias", 1, ""),
    "duplicate key": (b"email: {provider: outbox}\nemail: {provider: smtp}\n",
                      "yaml.duplicate_key", 2, ""),
    "unknown channel": (b"emial:\n  provider: outbox\n", "channels.unknown", 1, "did you mean 'email'"),
    "no provider": (b"email:\n  host: h\n", "channels.provider", 1, "provider"),
    "unknown setting": (
        b"email:\n  provider: smtp\n  host: h\n  from_address: a@example.com\n  pasword: x\n",
        "channels.settings", 5, "did you mean 'password'",
    ),
    "wrong type": (
        b"email:\n  provider: smtp\n  host: h\n  port: [25]\n  from_address: a@example.com\n",
        "channels.settings", 4, "port",
    ),
    "port out of range": (
        b"email:\n  provider: smtp\n  host: h\n  from_address: a@example.com\n  port: 70000\n",
        "channels.settings", 5, "1-65535",
    ),
    "bad CIDR": (
        b"webhook:\n  provider: webhook\n  secret: ${HOOK_SECRET}\n  allow:\n"
        b"    - 10.0.0.0/8\n    - 10.0.0.0/33\n",
        "channels.settings", 6, "10.0.0.0/33",
    ),
    "malformed reference": (
        b"email:\n  provider: smtp\n  host: h\n  from_address: a@example.com\n"
        b"  username: u\n  password: ${smtp password}\n",
        "channels.settings", 6, "Malformed reference",
    ),
    "unterminated reference": (
        b"email:\n  provider: smtp\n  host: h\n  from_address: a@example.com\n"
        b"  username: u\n  password: ${SMTP_PASSWORD\n",
        "channels.settings", 6, "Unterminated",
    ),
}  # fmt: skip


@pytest.fixture
def lint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for key in list(os.environ):
        if key.startswith("PARCOURS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PARCOURS_DATA_DIR", str(tmp_path / "data"))

    def run(name: str, raw: bytes) -> tuple[int, str, Path]:
        folder = tmp_path / "scenarios"
        folder.mkdir(exist_ok=True)
        (folder / name).write_bytes(raw)
        result = CliRunner().invoke(cli, ["lint", str(folder)], catch_exceptions=False)
        return result.exit_code, result.output, folder / name

    return run


def _assert_located(output: str, path: Path, code: str, line: int, text: str) -> None:
    assert "Traceback" not in output and "unexpected" not in output, output
    pattern = re.compile(rf"^{re.escape(str(path))}:(\d+):(\d+): error \[{re.escape(code)}\] (.*)$")
    found = [m for m in map(pattern.match, output.splitlines()) if m]
    assert found, output
    if line:
        assert int(found[0][1]) == line, output
    assert text in found[0][3], output


CASES = [("policy.yaml", case) for case in POLICY_CORPUS] + [
    ("channels.yaml", case) for case in CHANNELS_CORPUS
]


@pytest.mark.parametrize(("name", "case"), CASES)
def test_a_broken_file_is_reported_with_its_line(lint, name: str, case: str) -> None:  # type: ignore[no-untyped-def]
    corpus = POLICY_CORPUS if name == "policy.yaml" else CHANNELS_CORPUS
    raw, code, line, text = corpus[case]
    status, output, path = lint(name, raw)
    assert status == 1, output
    _assert_located(output, path, code, line, text)
    assert output.rstrip().endswith(" in 1 file"), output


def test_the_example_policy_and_a_valid_channels_file_lint_clean(lint) -> None:  # type: ignore[no-untyped-def]
    example = Path(__file__).resolve().parents[3] / "scenarios" / "policy.yaml"
    lint("policy.yaml", example.read_bytes())
    status, output, _ = lint("channels.yaml", b"email:\n  provider: outbox\n")
    assert status == 0, output


def test_every_problem_of_a_channel_gets_its_own_line(lint) -> None:  # type: ignore[no-untyped-def]
    raw = (
        b"email:\n  provider: smtp\n  host: h\n  from_address: a@example.com\n"
        b"  port: 0\n  timeout: -1\n  security: tls\n"
    )
    status, output, path = lint("channels.yaml", raw)
    assert status == 1
    lines = [ln for ln in output.splitlines() if ln.startswith(str(path))]
    assert [ln.split(":")[1] for ln in lines] == ["5", "6", "7"], output


def test_a_missing_required_setting_hides_no_other_problem(lint) -> None:  # type: ignore[no-untyped-def]
    raw = (
        b"email:\n  provider: smtp\n  host: h\n  port: 99999\n"
        b"webhook:\n  provider: webhook\n  alow: []\n  allow:\n    - 10.0.0.0/33\n"
    )
    status, output, path = lint("channels.yaml", raw)
    assert status == 1
    assert "__init__" not in output and "positional argument" not in output, output
    lines = [ln for ln in output.splitlines() if ln.startswith(str(path))]
    found = {(ln.split(":")[1], ln.rsplit(": ", 1)[-1].split(" ")[0]) for ln in lines}
    assert ("4", "Expected") in found, output  # the port, although from_address is missing
    assert any("'from_address' is required" in ln for ln in lines), output
    assert any("'secret' is required" in ln for ln in lines), output
    assert any(ln.split(":")[1] == "7" and "did you mean 'allow'" in ln for ln in lines), output
    assert any(ln.split(":")[1] == "9" and "10.0.0.0/33" in ln for ln in lines), output


def test_loading_a_broken_policy_raises_located_problems(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_bytes(b"format_version: 1\ntopics: {news: caf\xe9}\n")
    with pytest.raises(ScenarioInvalid) as caught:
        load_policy_file(path)
    assert [(p.file, p.line) for p in caught.value.problems] == [(str(path), 2)]


def test_loading_channels_with_an_unset_secret_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "channels.yaml").write_bytes(
        b"email:\n  provider: smtp\n  host: h\n  from_address: a@example.com\n"
        b"  username: u\n  password: ${SMTP_PASSWORD}\n"
    )
    with pytest.raises(ScenarioInvalid) as caught:
        load_channels(tmp_path, {})
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (6, 13)
    assert "SMTP_PASSWORD is not set" in problem.message


@pytest.mark.parametrize("name", ["policy.yaml", "channels.yaml"])
def test_the_worker_stops_on_a_broken_file_with_its_line(lint, tmp_path: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    lint(name, b"\xff\xfe" + "a: 1\n".encode("utf-16-le"))
    env = {"PARCOURS_SCENARIOS_DIR": str(tmp_path / "scenarios")}
    result = CliRunner().invoke(cli, ["worker", "--once"], env=env, catch_exceptions=False)
    assert result.exit_code == 1, result.output
    _assert_located(result.output, tmp_path / "scenarios" / name, "yaml.encoding", 1, "UTF-16")
