"""The deploy instructions and azd files agree with the templates: every parameter they pass
exists, every required one is passed, every output they read is produced."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.infra.bicep import INFRA, REPO, parse

# The deploy section of the README (the only copy of the instructions).
DEPLOY_MD = REPO / "README.md"
HOOK = INFRA / "hooks" / "postdeploy.sh"
AZD_BUILT_IN = {"AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_SUBSCRIPTION_ID"}


def _required(template: str) -> set[str]:
    return {n for n, spec in parse(template)["parameters"].items() if spec["default"] is None}


def _commands(text: str) -> list[str]:
    """Shell commands of a text, continuation lines joined."""
    return [" ".join(c.split()) for c in re.sub(r"\\\n", " ", text).splitlines() if c.strip()]


def _deployments(text: str) -> dict[str, set[str]]:
    """template file -> names passed as --parameters name=value, for each deployment command."""
    found: dict[str, set[str]] = {}
    for command in _commands(text):
        if "az deployment group create" not in command:
            continue
        template = re.search(r"--template-file infra/(\S+)", command)
        assert template, command
        names = set(re.findall(r"\s([A-Za-z]+)=", command.split("--parameters", 1)[1]))
        found[template.group(1)] = names
    return found


@pytest.mark.parametrize("source", [DEPLOY_MD, HOOK], ids=["README.md", "postdeploy.sh"])
def test_deployment_commands_pass_declared_and_all_required_parameters(source: Path) -> None:
    deployments = _deployments(source.read_text())
    expected = (
        {"main.bicep", "event-subscriptions.bicep"}
        if source is DEPLOY_MD
        else {"event-subscriptions.bicep"}
    )
    assert set(deployments) == expected
    for template, names in deployments.items():
        declared = set(parse(template)["parameters"])
        assert names <= declared, f"{template}: unknown {sorted(names - declared)}"
        assert _required(template) <= names, f"{template}: missing {_required(template) - names}"


def test_deploy_md_gives_the_three_steps_in_order() -> None:
    text = DEPLOY_MD.read_text()
    stage1 = text.index("--template-file infra/main.bicep")
    publish = text.index('func azure functionapp publish "$APP" --python')
    stage2 = text.index("--template-file infra/event-subscriptions.bicep")
    assert stage1 < publish < stage2


def test_outputs_read_by_the_docs_and_the_hook_exist() -> None:
    outputs = set(parse("main.bicep")["outputs"])
    read_by_docs = set(re.findall(r"\$\(out ([A-Z_]+)\)", DEPLOY_MD.read_text()))
    read_by_docs |= set(re.findall(r"properties\.outputs\.([A-Z_]+)\.value", DEPLOY_MD.read_text()))
    hook_vars = set(re.findall(r"\$\{?([A-Z_]+)", HOOK.read_text()))
    assert read_by_docs and read_by_docs <= outputs
    stage1_outputs_in_hook = (
        hook_vars
        - AZD_BUILT_IN
        - {
            "AZURE_RESOURCE_GROUP",
            "MAINTENANCE_CONFIGURATION_IDS",
            "DELIVER_TO_QUEUE",
        }
    )
    assert stage1_outputs_in_hook <= outputs, stage1_outputs_in_hook - outputs


def test_azd_parameters_name_declared_parameters_from_documented_environment_values() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = set(parse("main.bicep")["parameters"])
    assert set(parameters) <= declared
    assert _required("main.bicep") <= set(parameters)
    documented = set(re.findall(r"azd env set ([A-Z_]+)", DEPLOY_MD.read_text()))
    for name, spec in parameters.items():
        variables = re.findall(r"\$\{([A-Z_]+)", spec["value"])
        assert variables, f"{name} is not taken from the azd environment"
        assert set(variables) <= documented | AZD_BUILT_IN, name


def test_azure_yaml_provisions_infra_main_deploys_the_function_and_runs_stage_two() -> None:
    text = (REPO / "azure.yaml").read_text()
    lines = {line.strip() for line in text.splitlines()}
    assert {"provider: bicep", "path: infra", "module: main"} <= lines
    assert {"api:", "language: python", "host: function", "project: ."} <= lines
    assert "run: ./infra/hooks/postdeploy.sh" in lines
    assert os.access(HOOK, os.X_OK)
    assert HOOK.read_text().startswith("#!/bin/sh\n")


def test_check_script_runs_checkov_offline_on_infra() -> None:
    script = (INFRA / "check.sh").read_text()
    (run,) = [line for line in script.splitlines() if line.startswith('exec "$checkov"')]
    assert '--directory "$root/infra"' in run and "--skip-download" in run
    assert "--soft-fail" not in run and "api-key" not in run
    assert "export CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE" in script
    assert 'checkov="$venv/bin/checkov"' in script and "/.venv-checkov" in script
    assert re.search(r"^checkov==\d", (REPO / "requirements-checkov.txt").read_text(), re.M)
