"""Every Bicep file: it parses, its modules are wired right, and nothing in it is over-privileged,
secret or unjustified."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import pytest

from tests.infra.bicep import (
    INFRA,
    bicep_files,
    body,
    parse,
    render,
    resources,
    strings,
)

EXPECTED_FILES = {
    "main.bicep",
    "event-subscriptions.bicep",
    "modules/function-app.bicep",
    "modules/app-authentication.bicep",
    "modules/storage.bicep",
    "modules/monitoring.bicep",
    "modules/role-definitions.bicep",
    "modules/target-subscription-access.bicep",
    "modules/target-resource-group-access.bicep",
    "modules/maintenance-configuration-access.bicep",
    "modules/heartbeat-workspace-access.bicep",
    "modules/maintenance-event-topic.bicep",
}

# Built-in roles the app's identities may hold, by GUID. Anything else is a review.
ALLOWED_BUILT_IN_ROLES = {
    "acdd72a7-3385-48ef-bd42-f606fba81ae7": "Reader",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a": "Storage Queue Data Message Sender",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}
FORBIDDEN_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
    "9980e02c-c2be-4d73-94e8-173b1dc7cf3c": "Virtual Machine Contributor",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
}
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


def test_infra_holds_the_expected_bicep_files() -> None:
    assert set(bicep_files()) == EXPECTED_FILES


@pytest.mark.parametrize("relative", sorted(EXPECTED_FILES))
def test_bicep_file_parses_and_declares_its_target_scope(relative: str) -> None:
    scope = parse(relative)["globals"]["scope"]["value"]
    assert scope in {"resourceGroup", "subscription"}


def _modules() -> list[tuple[str, str]]:
    return [
        (relative, name)
        for relative in sorted(EXPECTED_FILES)
        for name in parse(relative).get("modules", {})
    ]


@pytest.mark.parametrize(("relative", "name"), _modules())
def test_module_passes_exactly_the_parameters_its_file_declares(relative: str, name: str) -> None:
    entry = parse(relative)["modules"][name]
    path = PurePosixPath(relative).parent / entry["detail"]["path"]
    assert (INFRA / path).is_file(), f"{relative}: module {name} points at missing {path}"
    declared = parse(str(path))["parameters"]
    required = {p for p, spec in declared.items() if spec["default"] is None}
    passed = set(body(entry).get("params", {}))
    assert passed <= set(declared), f"{name} passes unknown {sorted(passed - set(declared))}"
    assert required <= passed, f"{name} leaves out required {sorted(required - passed)}"


@pytest.mark.parametrize(("relative", "name"), _modules())
def test_module_target_scope_matches_the_scope_it_is_deployed_at(relative: str, name: str) -> None:
    entry = parse(relative)["modules"][name]
    path = PurePosixPath(relative).parent / entry["detail"]["path"]
    scope_expr = render(body(entry)["scope"]) if "scope" in body(entry) else ""
    if not scope_expr:  # deployed at the parent's scope
        expected = parse(relative)["globals"]["scope"]["value"]
    elif scope_expr.startswith("subscription("):
        expected = "subscription"
    elif scope_expr.startswith("resource_group("):
        expected = "resourceGroup"
    else:
        pytest.fail(f"{name}: unexpected scope {scope_expr}")
    assert parse(str(path))["globals"]["scope"]["value"] == expected


def test_resources_use_stable_api_versions() -> None:
    previews = [
        f"{relative}: {r['type']}@{r['api_version']}"
        for relative in EXPECTED_FILES
        for r in parse(relative).get("resources", {}).values()
        if "preview" in r["api_version"]
    ]
    assert previews == []


def test_no_owner_contributor_or_unlisted_built_in_role_is_referenced() -> None:
    found = {
        guid.lower(): relative
        for relative in EXPECTED_FILES
        for text in strings(parse(relative))
        for guid in GUID.findall(text)
    }
    forbidden = {FORBIDDEN_ROLES[g]: where for g, where in found.items() if g in FORBIDDEN_ROLES}
    assert forbidden == {}
    assert set(found) <= set(ALLOWED_BUILT_IN_ROLES), f"unreviewed role GUIDs: {found}"


def test_every_role_assignment_has_a_deterministic_guid_name_and_a_service_principal() -> None:
    assignments = {
        f"{relative}:{name}": body(entry)
        for relative in EXPECTED_FILES
        for name, entry in resources(relative, "Microsoft.Authorization/roleAssignments").items()
    }
    assert len(assignments) >= 7
    for where, assignment in assignments.items():
        name = render(assignment["name"])
        assert name.startswith("guid("), f"{where}: name {name} is not a guid()"
        # Keyed by scope, principal and role: re-deploying finds the same assignment.
        assert "principalId" in name or "PrincipalId" in name, where
        assert "newGuid" not in name and "utcNow" not in name, where
        assert assignment["properties"]["principalType"] == "ServicePrincipal", where


def test_custom_roles_have_no_wildcards_data_actions_or_broad_names() -> None:
    definitions = resources(
        "modules/role-definitions.bicep", "Microsoft.Authorization/roleDefinitions"
    )
    assert set(definitions) == {"vmPowerOperator", "maintenanceRunOperator"}
    actions = [
        text
        for var in ("vmPowerActions", "snapshotActions", "maintenanceRunActions")
        for text in parse("modules/role-definitions.bicep")["variables"][var]["value"]
    ]
    assert all("*" not in action for action in actions)
    for definition in definitions.values():
        props = body(definition)["properties"]
        assert props["type"] == "CustomRole"
        (permission,) = props["permissions"]
        assert permission["dataActions"] == [] and permission["notDataActions"] == []
        role_name = props["roleName"]
        assert "Owner" not in role_name and "Contributor" not in role_name


def test_nothing_reads_storage_keys_or_embeds_a_secret() -> None:
    texts = [text for relative in EXPECTED_FILES for text in strings(parse(relative))]
    raw = " ".join((INFRA / relative).read_text() for relative in EXPECTED_FILES)
    assert "listKeys" not in raw and "listkeys" not in raw.lower()
    for marker in ("AccountKey=", "SharedAccessSignature", "DefaultEndpointsProtocol", "sig="):
        assert not any(marker in text for text in texts), marker


def test_every_checkov_skip_names_a_check_and_gives_a_reason() -> None:
    skips = [
        line.strip()
        for relative in EXPECTED_FILES
        for line in (INFRA / relative).read_text().splitlines()
        if "checkov:skip" in line
    ]
    assert skips, "expected the justified skips next to their resources"
    for skip in skips:
        match = re.fullmatch(r"// checkov:skip=(CKV2?_AZURE_\d+): (.+)", skip)
        assert match, skip
        assert len(match.group(2)) >= 40, f"reason too thin: {skip}"
