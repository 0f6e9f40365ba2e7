from tests.api.conftest import Api


def test_deploy_through_http(api: Api) -> None:
    task = api.create_task()
    assert task["status"] == "pending"
    assert [j["key"] for j in task["jobs"]] == ["build", "deploy"]
    r = api.report(task["id"], {"job": "build", "step": "clone", "status": "in_progress"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "in_progress"
    r = api.report(task["id"], {"job": "build", "step": "compile", "status": "in_progress"})
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["index"] == 0 and "clone" in body["detail"], body
    r = api.call("GET", f"/v1/tasks/{task['id']}/timeline")
    assert r.status_code == 200, r.text
    print(r.json())
    r = api.call("GET", f"/v1/tasks/{task['id']}", who="intruder_writer")
    assert r.status_code == 404
    r = api.call("GET", f"/v1/tasks/{task['id']}/graph?format=svg", who="reader")
    assert r.status_code == 200 and "Build image" in r.text
