from domain.application import TaskLedger


def test_immediate_task_is_done_on_every_store(ledger: TaskLedger) -> None:
    written = ledger.create_task(
        org="acme",
        type="project.member.add",
        title="Add Bob to shop",
        kind="immediate",
        author={"id": "u-1", "name": "Alice", "kind": "user"},
    )
    assert written.task["status"] == "done"
    assert ledger.get_task(written.task["id"])["status"] == "done"
