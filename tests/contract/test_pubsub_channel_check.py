"""`bridge mappings check --live` in ``pubsub`` intake checks the channel the bridge
subscribes to and each change event it expects there, against the sandbox org's Pub/Sub
API over TLS."""

from __future__ import annotations

import json

import pytest

from bridge.app.cli import main
from bridge_sandbox.connect import sandbox_values

SETTING = "BRIDGE_SALESFORCE__PUBSUB_CHANNEL"


@pytest.fixture
def live_env(sf_sandbox, sn_sandbox, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    for key, value in sandbox_values(sf_sandbox, sn_sandbox).items():
        if isinstance(value, dict):
            for sub, v in value.items():
                monkeypatch.setenv(f"BRIDGE_{key.upper()}__{sub.upper()}", str(v))
        else:
            monkeypatch.setenv(f"BRIDGE_{key.upper()}", str(value))
    monkeypatch.setenv("BRIDGE_SALESFORCE__INTAKE", "pubsub")
    return sf_sandbox, sn_sandbox


def test_the_channel_and_its_members_pass_on_the_seeded_org(live_env, capsys):
    assert main(["mappings", "check", "--live", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["problems"] == []
    deliveries = live_env[0].control.pubsub_deliveries()
    assert deliveries["open_streams"] == 0  # GetTopic only: nothing subscribed


def test_a_channel_the_org_does_not_have_is_named_with_its_setting(live_env, monkeypatch, capsys):
    monkeypatch.setenv(SETTING, "/data/NoSuchChannel__chn")
    assert main(["mappings", "check", "--live", "--json"]) == 1
    (problem,) = json.loads(capsys.readouterr().out)["problems"]
    assert problem["key"] == SETTING
    assert "/data/NoSuchChannel__chn" in problem["message"]
    assert "does not exist" in problem["message"]
