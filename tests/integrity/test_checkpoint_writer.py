"""The checkpoint writer: one signed checkpoint per org whose chains moved, chained to the last."""

from __future__ import annotations

from domain.chain import GENESIS
from domain.checkpoints import checkpoint_digest, heads_root, signed_bytes
from integrity.signing import PublicKey
from tests.integrity.support import open_trail


def test_each_org_gets_a_checkpoint_over_the_heads_of_its_chains(store_url: str) -> None:
    with open_trail(store_url) as trail:
        first, second = trail.new_task(), trail.new_task()
        other = trail.new_task(org="globex")
        trail.queue(first)
        # Two orgs moved: two checkpoints, each over its own org's chains only.
        assert trail.checkpoint() == 2
        acme = trail.checkpoints.latest("acme")
        assert acme is not None
        heads = {
            str(t): (trail.version(t), trail.ledger.recorder.select_events(t, desc=True, limit=1))
            for t in (first, second)
        }
        assert acme.tasks == 2 and acme.seq == 1 and acme.previous == GENESIS
        expected = [
            [task, version, _hash_of(trail, events[0])] for task, (version, events) in heads.items()
        ]
        assert acme.root == heads_root(expected)
        assert sorted(acme.changed) == sorted(expected)
        globex = trail.checkpoints.latest("globex")
        assert globex is not None and globex.tasks == 1
        assert [c[0] for c in globex.changed] == [str(other)]


def test_a_checkpoint_verifies_with_the_public_key_alone(store_url: str) -> None:
    with open_trail(store_url) as trail:
        trail.new_task()
        trail.checkpoint()
        latest = trail.checkpoints.latest("acme")
        assert latest is not None
        document = latest.document
        public = PublicKey.from_base64(trail.key.public.base64)
        assert public.key_id == document["key_id"]
        assert public.verifies(document["signature"], signed_bytes(document))
        assert not public.verifies(document["signature"], signed_bytes({**document, "tasks": 2}))


def test_no_new_checkpoint_until_an_org_has_new_task_events(store_url: str) -> None:
    with open_trail(store_url) as trail:
        task = trail.new_task()
        untouched = trail.new_task()
        assert trail.checkpoint() == 1
        assert trail.checkpoint() == 0
        first = trail.checkpoints.latest("acme")
        trail.queue(task)
        assert trail.checkpoint() == 1
        second = trail.checkpoints.latest("acme")
        assert first is not None and second is not None
        # The second names only the head that moved, and chains to the first.
        assert second.seq == 2
        assert second.previous == checkpoint_digest(first.document)
        assert [c[:2] for c in second.changed] == [[str(task), trail.version(task)]]
        assert second.tasks == 2 and second.position > first.position
        assert str(untouched) not in [c[0] for c in second.changed]
        assert [c.seq for c in trail.checkpoints.all("acme")] == [1, 2]


def _hash_of(trail, stored) -> str:  # type: ignore[no-untyped-def]
    return str(trail.ledger.mapper.to_domain_event(stored).hash)
