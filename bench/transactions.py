"""Ledger transactions per Salesforce → ServiceNow offer.

One PSR on the external-routing queue, from the intake reading it to the AWA offer's
answer recorded: how many read and write transactions the ledger began for it.

- ``offer_path``: the PSR's own path: recorded by the PSR stream, processed (interaction
  and offer enqueued, and handed to the dispatcher in the same transaction), both
  commands run and their answers recorded.
- ``round``: the whole bridge round in which that happens, every stream polled, the echoes
  of the bridge's own interaction and offer recorded and processed too, less what an idle
  round costs.

    uv run python -m bench.transactions [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import event

from bench.rigs import sandboxes
from bridge.ledger.database import READ_ONLY

RESULTS = Path(__file__).parent / "results" / "transactions.json"


def _count(ledger_engine: Any) -> Counter[str]:
    counts: Counter[str] = Counter()

    def begin(conn: Any) -> None:
        counts["read" if conn.get_execution_options().get(READ_ONLY) else "write"] += 1

    event.listen(ledger_engine, "begin", begin)
    return counts


def measure(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, sandboxes(Path(tmp)) as rig:
        counts = _count(rig.ledger_engine)
        rig.settle()  # tokens, first cursors
        counts.clear()
        for _ in range(rounds):
            rig.step()
        idle = Counter({k: v / rounds for k, v in counts.items()})
        counts.clear()
        rig.start_sf_conversation()
        rig.offer_path()
        path = {k: counts[k] for k in ("read", "write")}
        if not rig.offered():
            raise SystemExit("the offer path did not reach ServiceNow")
        rig.settle()
        counts.clear()
        rig.start_sf_conversation()
        steps = 0
        while not rig.offered():
            rig.step()
            steps += 1
            if steps > 20:
                raise SystemExit("the offer never reached ServiceNow")
        offer = {k: round(counts[k] - idle[k] * steps) for k in ("read", "write")}
        return {
            "idle_round": {k: idle[k] for k in ("read", "write")},
            "rounds_until_offered": steps,
            "round": offer,
            "offer_path": path,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="idle rounds measured first")
    args = parser.parse_args(argv)
    figures = measure(args.rounds)
    path, offer = figures["offer_path"], figures["round"]
    print(
        f"ledger transactions per SF→SN offer, its own path: {path['read']} read + "
        f"{path['write']} write"
    )
    print(
        f"  the whole round (7 streams, echoes included, idle round of "
        f"{figures['idle_round']['read']:.1f} read + {figures['idle_round']['write']:.1f} "
        f"write subtracted): {offer['read']} read + {offer['write']} write"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
