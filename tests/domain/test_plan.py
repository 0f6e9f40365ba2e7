"""Plan validation: jobs, their steps and the `needs` graph (domain.md, "Tasks, jobs, steps")."""

from __future__ import annotations

import pytest

from domain.errors import InvalidRequestError
from domain.plan import (
    MAX_JOBS,
    MAX_STEPS_PER_JOB,
    JobPlan,
    StepPlan,
    dependants_of,
    find_cycle,
    validate_plan,
)
from tests.domain.builders import job


def problems(*jobs: JobPlan) -> list[tuple[tuple[str | int, ...], str]]:
    """The (loc, msg) pairs a plan is refused with."""
    with pytest.raises(InvalidRequestError) as caught:
        validate_plan(jobs)
    return [(p.loc, p.msg) for p in caught.value.problems]


def locs(*jobs: JobPlan) -> list[tuple[str | int, ...]]:
    return [loc for loc, _ in problems(*jobs)]


@pytest.mark.parametrize(
    "plan",
    [
        (job("build", "compile"),),
        # A diamond: test and lint both need build, ship needs both.
        (
            job("build", "compile"),
            job("test", "unit", needs=["build"]),
            job("lint", "ruff", needs=["build"]),
            job("ship", "push", needs=["test", "lint"]),
        ),
        # Needs may name a job listed later.
        (job("ship", "push", needs=["build"]), job("build", "compile")),
        # Keys may use digits, dots, dashes and underscores after the first character.
        (job("0-build_v1.2", "step.1", "step-2", "step_3"),),
    ],
    ids=["one job", "diamond", "forward need", "key characters"],
)
def test_well_formed_plan_is_accepted(plan: tuple[JobPlan, ...]) -> None:
    validate_plan(plan)


def test_need_of_an_unknown_job_is_refused_at_that_need() -> None:
    assert problems(job("build", "s"), job("ship", "s", needs=["build", "tests"])) == [
        (("jobs", 1, "needs", 1), "job ship needs unknown job 'tests'")
    ]


def test_job_needing_itself_is_refused_at_that_need() -> None:
    assert problems(job("build", "s", needs=["build"])) == [
        (("jobs", 0, "needs", 0), "job build cannot need itself")
    ]


def test_need_listed_twice_is_refused_at_the_needs() -> None:
    assert locs(job("build", "s"), job("ship", "s", needs=["build", "build"])) == [
        ("jobs", 1, "needs")
    ]


@pytest.mark.parametrize(
    ("plan", "path", "index"),
    [
        ((job("a", "s", needs=["b"]), job("b", "s", needs=["a"])), "a -> b -> a", 0),
        (
            (
                job("root", "s"),
                job("x", "s", needs=["root", "z"]),
                job("y", "s", needs=["x"]),
                job("z", "s", needs=["y"]),
            ),
            "x -> z -> y -> x",
            1,
        ),
    ],
    ids=["two jobs", "three jobs behind a root"],
)
def test_cyclic_needs_are_refused_naming_the_cycle(
    plan: tuple[JobPlan, ...], path: str, index: int
) -> None:
    assert problems(*plan) == [(("jobs", index, "needs"), f"needs form a cycle: {path}")]


def test_duplicate_job_key_is_refused_at_the_second_job() -> None:
    assert problems(job("build", "s"), job("build", "t")) == [
        (("jobs", 1, "key"), "duplicate job key 'build'")
    ]


def test_duplicate_step_key_is_refused_at_the_second_step() -> None:
    assert problems(job("build", "clone", "compile", "clone")) == [
        (("jobs", 0, "steps", 2, "key"), "duplicate step key 'clone' in job build")
    ]


def test_same_step_key_in_two_jobs_is_fine() -> None:
    validate_plan((job("build", "setup"), job("test", "setup")))


BAD_KEYS = [
    "Build",
    "build\n",
    "",
    "-build",
    "_build",
    ".build",
    "build job",
    "bu!ld",
    "b" * 101,
    "ünï",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_job_key_that_is_not_a_slug_is_refused(key: str) -> None:
    [(loc, msg)] = problems(JobPlan(key, "Job", (StepPlan("s", "S"),)))

    assert loc == ("jobs", 0, "key")
    assert repr(key) in msg


@pytest.mark.parametrize("key", BAD_KEYS)
def test_step_key_that_is_not_a_slug_is_refused(key: str) -> None:
    assert locs(job("build", "clone", StepPlan(key, "Step"))) == [("jobs", 0, "steps", 1, "key")]


def test_longest_key_is_accepted() -> None:
    validate_plan((job("b" * 100, "s" * 100),))


def test_executable_plan_without_jobs_is_refused() -> None:
    assert problems() == [(("jobs",), "an executable task needs at least one job")]


def test_job_without_steps_is_refused_at_its_steps() -> None:
    assert problems(job("build", "s"), job("ship")) == [
        (("jobs", 1, "steps"), "job ship needs at least one step")
    ]


def test_plan_of_200_jobs_is_accepted_and_201_refused() -> None:
    jobs = tuple(job(f"j{i}", "s") for i in range(MAX_JOBS + 1))

    validate_plan(jobs[:MAX_JOBS])
    assert problems(*jobs) == [(("jobs",), "at most 200 jobs")]


def test_job_of_200_steps_is_accepted_and_201_refused() -> None:
    steps = [f"s{i}" for i in range(MAX_STEPS_PER_JOB + 1)]

    validate_plan((job("build", *steps[:MAX_STEPS_PER_JOB]),))
    assert problems(job("ok", "s"), job("build", *steps)) == [
        (("jobs", 1, "steps"), "at most 200 steps per job")
    ]


def test_every_problem_is_reported_at_once() -> None:
    found = locs(
        job("Build", "s", "s"),
        job("ship", needs=["nowhere"]),
    )

    assert found == [
        ("jobs", 0, "key"),
        ("jobs", 0, "steps", 1, "key"),
        ("jobs", 1, "steps"),
        ("jobs", 1, "needs", 0),
    ]


def test_error_message_names_each_location() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        validate_plan((job("build", "s", needs=["nope"]),))

    assert str(caught.value) == "jobs.0.needs.0: job build needs unknown job 'nope'"


def test_find_cycle_returns_none_for_a_dag() -> None:
    assert find_cycle((job("a", "s"), job("b", "s", needs=["a"]))) is None


def test_dependants_are_found_transitively_in_plan_order() -> None:
    plan = (
        job("notify", "s", needs=["deploy"]),
        job("build", "s"),
        job("lint", "s"),
        job("deploy", "s", needs=["build"]),
    )

    assert dependants_of(plan, "build") == ["notify", "deploy"]
    assert dependants_of(plan, "lint") == []


def test_plan_round_trips_through_its_dict_form() -> None:
    plan = job("build", StepPlan("prepare", "Prepare", system=True), "clone", needs=["x"])

    assert JobPlan.from_dict(plan.as_dict()) == plan
