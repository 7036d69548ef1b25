"""The benchmark's plan: which cases a set of choices runs."""

from __future__ import annotations

from turbopipe.benchmark import WRITER_METHODS, Plan


def test_a_plan_runs_every_combination_of_its_choices() -> None:
    plan = Plan(resolutions=["720p", "1080p"], encoders=["null", "slow"], buffers=[1, 4],
                methods=["plain", "native"], gigabytes=0.1)  # fmt: skip
    cases = plan.expand()
    assert len(cases) == 2 * 2 * 2 * 2
    null_720p = next(case for case in cases if case["resolution"] == "720p")
    slow_720p = next(case for case in cases if case["encoder"] == "slow")
    assert null_720p["frames"] == int(0.1e9 / (1280 * 720 * 3))
    assert slow_720p["frames"] == max(30, null_720p["frames"] // 8)


def test_a_writer_plan_runs_its_methods_at_each_resolution() -> None:
    plan = Plan(resolutions=["720p", "1080p"], methods=["writer-gpu"], writer=True)
    assert [(case["resolution"], case["method"]) for case in plan.expand()] == [
        ("720p", "writer-gpu"),
        ("1080p", "writer-gpu"),
    ]
    assert len(Plan(resolutions=["720p"], methods=WRITER_METHODS, writer=True).expand()) == 3
