"""`bridge mappings check --live` against both sandboxes over HTTPS."""

from __future__ import annotations

import json

import pytest

from bridge.app.cli import main
from bridge_sandbox import seed
from bridge_sandbox.connect import sandbox_values


@pytest.fixture
def live_env(sf_sandbox, sn_sandbox, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    for key, value in sandbox_values(sf_sandbox, sn_sandbox).items():
        if isinstance(value, dict):
            for sub, v in value.items():
                monkeypatch.setenv(f"BRIDGE_{key.upper()}__{sub.upper()}", str(v))
        else:
            monkeypatch.setenv(f"BRIDGE_{key.upper()}", str(value))
    return sf_sandbox, sn_sandbox


def test_live_check_passes_on_the_seeded_systems(live_env, capsys):
    assert main(["mappings", "check", "--live", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["problems"] == []
    assert report["queues"] == len(seed.QUEUES)


def test_live_check_names_what_the_systems_no_longer_hold(live_env, capsys):
    _sf, sn = live_env
    support = seed.QUEUES[0]
    sn.instance.update("awa_queue", support.sn_queue_sys_id, {"external_id": "RENAMED"})
    role = sn.instance.where("sys_user_role", name="awa_external_user")[0]["sys_id"]
    bob = seed.AGENTS[1].sn_user_sys_id
    for grant in sn.instance.where("sys_user_has_role", user=bob, role=role):
        sn.instance.delete("sys_user_has_role", grant["sys_id"])

    assert main(["mappings", "check", "--live"]) == 1
    out = capsys.readouterr().out
    assert f"no awa_queue with external_id '{support.sn_external_id}'" in out
    assert "awa_external_user" in out
    assert "crosswalk.yaml:" in out
