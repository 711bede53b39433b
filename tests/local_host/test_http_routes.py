"""Route templates: parameters, optional and catch-all segments, constraints, precedence."""

from __future__ import annotations

import pytest

from sandbox.local_host.http_routes import InvalidRoute, RouteTemplate


def test_parameters_are_captured_and_url_decoded() -> None:
    route = RouteTemplate.parse("runs/{configuration}/{runName}")
    assert route.match("/runs/weekly%20linux/20261201030000") == {
        "configuration": "weekly linux",
        "runName": "20261201030000",
    }
    assert route.match("/runs/weekly") is None
    assert route.match("/runs/a/b/c") is None


def test_literals_match_in_any_case_and_a_trailing_slash_is_fine() -> None:
    route = RouteTemplate.parse("Runs/{id}")
    assert route.match("/runs/7/") == {"id": "7"}


def test_optional_parameter_may_be_left_out() -> None:
    route = RouteTemplate.parse("runs/{id?}")
    assert route.match("/runs") == {}
    assert route.match("/runs/7") == {"id": "7"}


def test_catch_all_takes_the_rest_of_the_path() -> None:
    route = RouteTemplate.parse("files/{*path}")
    assert route.match("/files/a/b/c.txt") == {"path": "a/b/c.txt"}
    assert route.match("/files") == {}


def test_int_constraint_rejects_other_values() -> None:
    route = RouteTemplate.parse("items/{id:int}")
    assert route.match("/items/42") == {"id": "42"}
    assert route.match("/items/abc") is None


def test_parameter_inside_a_segment_splits_at_the_last_dot() -> None:
    route = RouteTemplate.parse("files/{name}.{ext}")
    assert route.match("/files/report.final.pdf") == {"name": "report.final", "ext": "pdf"}


def test_more_specific_routes_sort_first() -> None:
    templates = ["{*rest}", "runs/{id}", "runs/{id:int}", "runs/latest", "runs/{id?}"]
    ordered = sorted((RouteTemplate.parse(t) for t in templates), key=lambda r: r.sort_key)
    assert [r.template for r in ordered] == [
        "runs/latest",
        "runs/{id:int}",
        "runs/{id}",
        "runs/{id?}",
        "{*rest}",
    ]


@pytest.mark.parametrize("template", ["a//b", "a/{*rest}/b", "a/{bad-name}", "a/{open"])
def test_malformed_templates_are_refused(template: str) -> None:
    with pytest.raises(InvalidRoute):
        RouteTemplate.parse(template)
