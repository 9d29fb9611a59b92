"""The committed Pub/Sub API stubs are exactly what the generator makes from the
unmodified proto, and the proto is the published one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bridge.adapters.salesforce.pubsub import generate, pubsub_api_pb2, pubsub_api_pb2_grpc

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "salesforce"


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    generate.generate(tmp_path)
    for name in generate.OUTPUTS:
        assert (generate.HERE / name).read_text() == (tmp_path / name).read_text(), (
            f"{name} is stale: run `uv run python -m bridge.adapters.salesforce.pubsub.generate`"
        )


def test_the_proto_is_unmodified() -> None:
    published = REFERENCE / "pubsub_api.proto"
    if not published.exists():
        pytest.skip(f"the published proto is not beside the project ({published})")
    digest = hashlib.sha256(published.read_bytes()).hexdigest()
    assert hashlib.sha256(generate.PROTO.read_bytes()).hexdigest() == digest


def test_stubs_expose_the_pubsub_service() -> None:
    assert hasattr(pubsub_api_pb2_grpc, "PubSubStub")
    assert hasattr(pubsub_api_pb2_grpc, "PubSubServicer")
    request = pubsub_api_pb2.FetchRequest(
        topic_name="/data/ExternalRoutingChannel__chn",
        replay_preset=pubsub_api_pb2.ReplayPreset.LATEST,
        num_requested=100,
    )
    assert pubsub_api_pb2.FetchRequest.FromString(request.SerializeToString()) == request
