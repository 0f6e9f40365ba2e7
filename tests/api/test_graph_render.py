"""The execution-graph renderings (api/graph.py): JSON, Mermaid and SVG, from plain
task dicts shaped like `domain.views.task_view` output (no store needed)."""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from api.graph import STATUS_STYLES, graph_json, graph_mermaid, graph_svg, mermaid_id

SVG = "{http://www.w3.org/2000/svg}"
SPECIAL = 'Build & "test" <x>'


def job(
    key: str,
    name: str | None = None,
    status: str = "pending",
    needs: tuple[str, ...] = (),
    system: bool = False,
) -> dict[str, Any]:
    return {
        "key": key,
        "name": name if name is not None else key.title(),
        "needs": list(needs),
        "status": status,
        "system": system,
        "attempt": 1,
        "retry_at": None,
        "started_at": None,
        "finished_at": None,
        "duration_seconds": None,
        "error": None,
        "reason": None,
        "steps": [
            {"key": "run", "name": "Run", "status": status, "system": False},
        ],
    }


def task(*jobs: dict[str, Any], title: str = "Deploy my-app") -> dict[str, Any]:
    return {
        "id": "0b6f3c36-7a3b-4a57-9d34-5d2f7f4c1e01",
        "org": "acme",
        "type": "app.deploy",
        "title": title,
        "kind": "executable",
        "status": "failed",
        "jobs": list(jobs),
    }


def deploy_task() -> dict[str, Any]:
    return task(
        job("build", SPECIAL, "done_with_warnings"),
        job("deploy", "Deploy to production", "done", needs=("build",)),
        job("lint", "Lint", "done"),
        job("tests", "Integration tests", "failed", needs=("build",)),
        job("publish", "Publish release notes", "canceled", needs=("tests",)),
        job("warm-cache", "Warm registry cache", "done", system=True),
        job("audit", "Record audit trail", "done", needs=("deploy", "warm-cache"), system=True),
        job("notify", "Notify team", "queued", needs=("deploy", "warm-cache")),
    )


VISIBLE = ["build", "deploy", "lint", "tests", "publish", "notify"]
SYSTEM = ["warm-cache", "audit"]


def job_groups(svg: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)
    return {g.get("data-key", ""): g for g in root.iter(f"{SVG}g") if g.get("data-key")}


def all_text(element: ET.Element) -> str:
    return "\n".join("".join(e.itertext()) for e in element.iter())


def box(group: ET.Element) -> tuple[float, float, float, float]:
    rect = group.find(f"{SVG}rect")
    assert rect is not None
    return (
        float(rect.get("x", "0")),
        float(rect.get("y", "0")),
        float(rect.get("width", "0")),
        float(rect.get("height", "0")),
    )


# -- JSON ---------------------------------------------------------------------------------


def test_json_nodes_and_edges_follow_the_plan():
    graph = graph_json(deploy_task(), include_system=False)

    assert graph["nodes"] == [
        {"key": "build", "name": SPECIAL, "status": "done_with_warnings", "system": False},
        {"key": "deploy", "name": "Deploy to production", "status": "done", "system": False},
        {"key": "lint", "name": "Lint", "status": "done", "system": False},
        {"key": "tests", "name": "Integration tests", "status": "failed", "system": False},
        {"key": "publish", "name": "Publish release notes", "status": "canceled", "system": False},
        {"key": "notify", "name": "Notify team", "status": "queued", "system": False},
    ]
    assert graph["edges"] == [
        {"from": "build", "to": "deploy"},
        {"from": "build", "to": "tests"},
        {"from": "tests", "to": "publish"},
        {"from": "deploy", "to": "notify"},
    ]


def test_json_hides_system_jobs_and_their_edges_unless_asked():
    hidden = graph_json(deploy_task(), include_system=False)
    assert not {n["key"] for n in hidden["nodes"]} & set(SYSTEM)
    assert all(e["from"] not in SYSTEM and e["to"] not in SYSTEM for e in hidden["edges"])

    shown = graph_json(deploy_task(), include_system=True)
    assert [n["key"] for n in shown["nodes"]] == [
        "build",
        "deploy",
        "lint",
        "tests",
        "publish",
        "warm-cache",
        "audit",
        "notify",
    ]
    assert {"key": "audit", "name": "Record audit trail", "status": "done", "system": True} in (
        shown["nodes"]
    )
    edges = {(e["from"], e["to"]) for e in shown["edges"]}
    assert {("deploy", "audit"), ("warm-cache", "audit"), ("warm-cache", "notify")} <= edges


def test_json_of_a_task_without_jobs_is_empty():
    assert graph_json(task(), include_system=True) == {"nodes": [], "edges": []}


# -- SVG ----------------------------------------------------------------------------------


def test_svg_parses_and_names_every_visible_job_but_no_hidden_one():
    svg = graph_svg(deploy_task(), include_system=False)
    root = ET.fromstring(svg)  # well-formed XML, special characters escaped

    assert root.tag == f"{SVG}svg"
    groups = job_groups(svg)
    assert list(groups) == VISIBLE
    text = all_text(root)
    for j in deploy_task()["jobs"]:
        if j["system"]:
            assert j["name"] not in svg and j["key"] not in svg
        else:
            assert j["name"] in text
    # The special name is written escaped, never raw.
    assert "Build &amp; &quot;test&quot; &lt;x&gt;" in svg
    assert SPECIAL not in svg
    # Each box shows its name and its status label.
    build = all_text(groups["build"])
    assert SPECIAL in build and "done with warnings" in build


def test_svg_shows_system_jobs_with_a_marker_when_asked():
    svg = graph_svg(deploy_task(), include_system=True)
    groups = job_groups(svg)

    assert set(SYSTEM) <= set(groups)
    assert "SYSTEM" in all_text(groups["audit"])
    assert "SYSTEM" not in all_text(groups["deploy"])
    assert "Record audit trail" in all_text(groups["audit"])


def test_svg_title_is_the_task_title():
    svg = graph_svg(deploy_task() | {"title": 'Release <v2> & "more"'}, include_system=False)
    title = ET.fromstring(svg).find(f"{SVG}title")

    assert title is not None and title.text == 'Release <v2> & "more"'


def test_svg_draws_an_arrow_per_visible_edge_from_border_to_border():
    t = deploy_task()
    svg = graph_svg(t, include_system=False)
    root = ET.fromstring(svg)
    groups = job_groups(svg)
    marker = root.find(f"{SVG}defs/{SVG}marker")
    assert marker is not None

    paths = [p for p in root.iter(f"{SVG}path") if p.get("class") == "edge"]
    drawn = [(p.get("data-from"), p.get("data-to")) for p in paths]
    expected = [(e["from"], e["to"]) for e in graph_json(t, include_system=False)["edges"]]
    assert sorted(drawn) == sorted(expected)
    for p in paths:
        assert p.get("marker-end") == f"url(#{marker.get('id')})"
        numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", p.get("d", ""))]
        sx, sy, tx, ty = numbers[0], numbers[1], numbers[-2], numbers[-1]
        ax, ay, aw, ah = box(groups[p.get("data-from", "")])
        bx, by, _, bh = box(groups[p.get("data-to", "")])
        assert sx == pytest.approx(ax + aw) and ay <= sy <= ay + ah  # leaves the right side
        assert tx == pytest.approx(bx) and by <= ty <= by + bh  # enters the left side


def test_svg_lays_out_columns_by_dependency_depth():
    groups = job_groups(graph_svg(deploy_task(), include_system=False))
    x = {k: box(g)[0] for k, g in groups.items()}

    assert x["build"] == x["lint"]  # no needs: first column
    assert x["build"] < x["deploy"] == x["tests"] < x["publish"] == x["notify"]


def test_svg_colours_differ_by_status():
    statuses = list(STATUS_STYLES)
    t = task(*(job(f"j{i}", f"Job {s}", s) for i, s in enumerate(statuses)))
    groups = job_groups(graph_svg(t, include_system=False))

    fills, strokes = set(), set()
    for i, status in enumerate(statuses):
        g = groups[f"j{i}"]
        rect = g.find(f"{SVG}rect")
        assert rect is not None
        fills.add(rect.get("fill"))
        strokes.add(rect.get("stroke"))
        assert STATUS_STYLES[status].label in all_text(g)
    assert len(fills) == len(statuses)
    assert len(strokes) == len(statuses)


def test_svg_boxes_never_overlap_and_output_is_deterministic():
    jobs = [
        job(
            f"j{i}",
            f"Job {i}",
            "done",
            needs=tuple(f"j{k}" for k in (i - 1, i - 3, i // 2) if 0 <= k < i),
        )
        for i in range(60)
    ]
    jobs += [job(f"lone{i}", f"Lone {i}", "queued") for i in range(5)]  # disconnected
    t = task(*jobs)
    svg = graph_svg(t, include_system=False)

    assert svg == graph_svg(t, include_system=False)
    boxes = [box(g) for g in job_groups(svg).values()]
    assert len(boxes) == 65
    for i, (ax, ay, aw, ah) in enumerate(boxes):
        for bx, by, bw, bh in boxes[i + 1 :]:
            apart = ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay
            assert apart, ((ax, ay), (bx, by))


def test_svg_of_a_task_without_jobs():
    svg = graph_svg(task(title="Add a member"), include_system=False)
    root = ET.fromstring(svg)

    assert "No jobs to show" in all_text(root)
    assert job_groups(svg) == {}


def test_svg_survives_names_xml_cannot_hold():
    svg = graph_svg(task(job("a", "bell\x07 and \x00 nul")), include_system=False)

    assert "and" in all_text(ET.fromstring(svg))


def test_svg_still_renders_a_cycle():
    # A valid plan never has one; the picture must not fail on bad data all the same.
    t = task(job("a", needs=("c",)), job("b", needs=("a",)), job("c", needs=("b",)), job("d"))

    assert list(job_groups(graph_svg(t, include_system=False))) == ["a", "b", "c", "d"]


# -- Mermaid ------------------------------------------------------------------------------


def test_mermaid_has_every_node_and_edge():
    t = deploy_task()
    text = graph_mermaid(t, include_system=False)
    lines = text.splitlines()

    assert lines[0] == "flowchart LR"
    for key in VISIBLE:
        assert any(line.strip().startswith(f'{mermaid_id(key)}["') for line in lines), key
    for edge in graph_json(t, include_system=False)["edges"]:
        assert f"    {mermaid_id(edge['from'])} --> {mermaid_id(edge['to'])}" in lines
    assert text.count("-->") == 4
    for key in SYSTEM:
        assert mermaid_id(key) not in text
    assert "Deploy to production<br/>done" in text


def test_mermaid_includes_system_jobs_when_asked():
    text = graph_mermaid(deploy_task(), include_system=True)

    assert f"{mermaid_id('warm-cache')} --> {mermaid_id('notify')}" in text
    assert "Record audit trail<br/>done<br/><i>system</i>" in text


def test_mermaid_escapes_labels():
    text = graph_mermaid(task(job("b", 'Build & "test" <x> #1`')), include_system=False)
    (node,) = [line for line in text.splitlines() if line.strip().startswith("j_b[")]

    assert node.strip() == 'j_b["Build #38; #34;test#34; #60;x#62; #35;1#96;<br/>pending"]'
    label = node.split('["', 1)[1].rsplit('"]', 1)[0]
    assert '"' not in label


def test_mermaid_ids_are_safe_and_distinct():
    keys = ["build", "build-image", "build_image", "build.image", "build_2d_image", "end", "0x"]
    ids = [mermaid_id(k) for k in keys]

    assert len(set(ids)) == len(keys)
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", i) for i in ids)
    assert mermaid_id("end") != "end"


def test_mermaid_assigns_a_coloured_class_per_status():
    text = graph_mermaid(deploy_task(), include_system=False)

    for status, style in STATUS_STYLES.items():
        assert f"classDef st_{status} fill:{style.fill},stroke:{style.stroke}," in text
    assert f"class {mermaid_id('deploy')},{mermaid_id('lint')} st_done" in text
    assert f"class {mermaid_id('tests')} st_failed" in text
    assert f"class {mermaid_id('publish')} st_canceled" in text


# -- size ---------------------------------------------------------------------------------


def _timed(t: dict[str, Any]) -> float:
    start = time.perf_counter()
    svg = graph_svg(t, include_system=False)
    graph_mermaid(t, include_system=False)
    graph_json(t, include_system=False)
    elapsed = time.perf_counter() - start
    assert len(job_groups(svg)) == len(t["jobs"])
    return elapsed


def test_a_200_job_chain_renders_quickly():
    chain = task(
        *(job(f"j{i}", f"Job {i}", "done", needs=(f"j{i - 1}",) if i else ()) for i in range(200))
    )

    assert _timed(chain) < 1.0


def test_a_wide_fan_out_renders_quickly():
    fan = task(
        job("root", "Prepare", "done"),
        *(job(f"f{i}", f"Shard {i}", "in_progress", needs=("root",)) for i in range(50)),
        job("merge", "Merge", "pending", needs=tuple(f"f{i}" for i in range(50))),
    )

    assert _timed(fan) < 1.0


def test_a_dense_200_job_graph_renders_in_reasonable_time():
    dense = task(
        *(
            job(f"j{i}", f"Job {i}", "done", needs=tuple(f"j{k}" for k in range(i)))
            for i in range(200)
        )
    )

    assert _timed(dense) < 5.0
