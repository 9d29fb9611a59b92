"""`bridge config show` flags what `bridge run` would refuse at start: a mappings directory
that is missing or whose tables do not load, and a CA bundle that is not PEM. The settings
are still shown; each problem is one line on standard error, and the exit code is 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import trustme

from bridge.app.cli import EXIT_ERROR, main
from bridge.app.settings import ca_bundle_problem
from bridge_sandbox import tables


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secrets").mkdir()
    monkeypatch.setenv("BRIDGE_SECRETS_DIR", str(tmp_path / "secrets"))
    monkeypatch.setenv("BRIDGE_MAPPINGS_DIR", str(tables.DIRECTORY))
    return tmp_path


def _pem(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return path


def _broken_mappings(tmp_path: Path) -> Path:
    broken = tmp_path / "mappings"
    shutil.copytree(tables.DIRECTORY, broken)
    (broken / "crosswalk.yaml").write_text("queues: [\n")
    return broken


def test_good_settings_show_no_problem(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_CA_BUNDLE", str(_pem(workdir)))
    assert main(["config", "show"]) == 0
    captured = capsys.readouterr()
    assert "BRIDGE_MAPPINGS_DIR" in captured.out
    assert "problem" not in captured.err


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (
            lambda tmp: {"BRIDGE_MAPPINGS_DIR": str(tmp / "nowhere")},
            ["BRIDGE_MAPPINGS_DIR", "nowhere", "not a directory"],
        ),
        (
            lambda tmp: {"BRIDGE_MAPPINGS_DIR": str(_broken_mappings(tmp))},
            ["BRIDGE_MAPPINGS_DIR", "crosswalk.yaml:", "not valid YAML", "bridge mappings check"],
        ),
        (
            lambda tmp: {"BRIDGE_CA_BUNDLE": str(tmp / "no-such-ca.pem")},
            ["BRIDGE_CA_BUNDLE", "no-such-ca.pem", "cannot read"],
        ),
        (
            lambda tmp: {"BRIDGE_CA_BUNDLE": str(_write(tmp / "ca.der", b"\x30\x82\x01\x0a"))},
            ["BRIDGE_CA_BUNDLE", "ca.der", "not a PEM CA bundle"],
        ),
    ],
    ids=["mappings-missing", "mappings-broken", "ca-missing", "ca-not-pem"],
)
def test_problems_are_flagged_one_line_each_exit_2(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    setup,
    expected: list[str],
) -> None:
    for name, value in setup(workdir).items():
        monkeypatch.setenv(name, value)
    assert main(["config", "show"]) == EXIT_ERROR
    captured = capsys.readouterr()
    assert "BRIDGE_HTTP_PORT" in captured.out  # the settings are still shown
    problems = [line for line in captured.err.splitlines() if line.startswith("problem:")]
    assert problems, captured.err
    text = "\n".join(problems)
    for part in expected:
        assert part in text, captured.err
    assert "Traceback" not in captured.err

    assert main(["config", "show", "--json"]) == EXIT_ERROR
    captured = capsys.readouterr()
    rows = json.loads(captured.out)  # still the settings, machine-readable
    assert any(r["env"] == "BRIDGE_MAPPINGS_DIR" for r in rows)
    assert "problem:" in captured.err


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read"),
        (b"", "not a PEM CA bundle"),
        (b"hello\n", "not a PEM CA bundle"),
        (b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", "usable"),
    ],
)
def test_ca_bundle_problems(tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    problem = ca_bundle_problem(path)
    assert problem is not None
    assert expected in problem
    assert problem.startswith(f"BRIDGE_CA_BUNDLE: {path}")


def test_a_pem_bundle_and_none_are_fine(tmp_path: Path) -> None:
    assert ca_bundle_problem(_pem(tmp_path)) is None
    assert ca_bundle_problem(None) is None
