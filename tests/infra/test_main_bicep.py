"""Stage 1 (infra/main.bicep and its modules): Flex Consumption app, identity-based storage,
monitoring without local auth, app settings that match local.settings.sample.json, and the
least-privilege roles at the scopes given as parameters."""

from __future__ import annotations

import json
from typing import Any

from tests.infra.bicep import (
    REPO,
    body,
    decorator,
    loop_item,
    loop_source,
    module,
    param,
    parse,
    render,
    resource,
    resources,
    variable,
)

MAIN = "main.bicep"
FUNCTION_APP = "modules/function-app.bicep"
STORAGE = "modules/storage.bicep"
MONITORING = "modules/monitoring.bicep"
ROLES = "modules/role-definitions.bicep"
AUTHENTICATION = "modules/app-authentication.bicep"

# Keys of local.settings.sample.json that are deliberately not app settings in Azure, and why.
NOT_APP_SETTINGS_IN_AZURE = {
    "FUNCTIONS_WORKER_RUNTIME": "Flex Consumption sets the runtime in functionAppConfig",
    "WEBSITE_AUTH_ENABLED": "App Service sets it itself when its authentication is on",
    "AzureWebJobsStorage": "replaced by the identity-based AzureWebJobsStorage__* settings",
}
# App settings only the platform reads, so they are not in the sample file.
PLATFORM_ONLY_SETTINGS = {
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"


def _sample_setting_keys() -> set[str]:
    sample = json.loads((REPO / "local.settings.sample.json").read_text())
    return set(sample["Values"])


def _main_settings() -> dict[str, str]:
    return {k: render(v) for k, v in variable(MAIN, "appSettings").items()}


# --- App settings -------------------------------------------------------------------------


def test_app_settings_are_exactly_the_sample_settings_less_the_documented_exceptions() -> None:
    sample = _sample_setting_keys()
    assert set(NOT_APP_SETTINGS_IN_AZURE) <= sample, "an exception no longer in the sample"
    assert set(_main_settings()) == sample - set(NOT_APP_SETTINGS_IN_AZURE)


def test_platform_only_settings_are_kept_apart_from_the_app_settings() -> None:
    platform = set(variable(MAIN, "platformSettings"))
    assert platform == PLATFORM_ONLY_SETTINGS
    assert not platform & _sample_setting_keys()
    assert not platform & set(_main_settings())


def test_function_app_receives_app_and_platform_settings_through_one_loop() -> None:
    params = body(module(MAIN, "functionApp"))["params"]
    assert render(params["appSettings"]) == "union(appSettings, platformSettings)"
    site = body(resource(FUNCTION_APP, "site"))
    settings = site["properties"]["siteConfig"]["appSettings"]
    assert render(settings["loop_type"]["detail"]["array_name"]) == "items(appSettings)"
    assert render(settings["config"]) == "{name: setting.key, value: setting.value}"


def test_identity_settings_name_the_app_identity_and_storage_its_own_endpoints() -> None:
    settings = _main_settings()
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "appIdentity.properties.clientId"
    assert settings["MANAGED_IDENTITY_CLIENT_ID"] == "appIdentity.properties.clientId"
    assert settings["AzureWebJobsStorage__accountName"] == "storage.outputs.name"
    assert settings["AzureWebJobsStorage__tableServiceUri"] == "storage.outputs.tableEndpoint"
    assert settings["AzureWebJobsStorage__queueServiceUri"] == "storage.outputs.queueEndpoint"
    outputs = parse(STORAGE)["outputs"]
    assert render(outputs["tableEndpoint"]["value"]) == "storage.properties.primaryEndpoints.table"
    assert render(outputs["queueEndpoint"]["value"]) == "storage.properties.primaryEndpoints.queue"


def test_cloud_endpoints_come_from_the_cloud_the_app_is_deployed_to() -> None:
    settings = _main_settings()
    assert settings["ARM_ENDPOINT"] == "environment().resourceManager"
    assert settings["AZURE_AUTHORITY_HOST"] == "environment().authentication.loginEndpoint"


def test_settings_taken_from_parameters_default_to_the_sample_values() -> None:
    sample = json.loads((REPO / "local.settings.sample.json").read_text())["Values"]
    declared = parse(MAIN)["parameters"]
    checked = []
    for key, value in _main_settings().items():
        name = value.removeprefix("string(").removesuffix(")")
        if name in declared and sample[key]:
            assert str(declared[name]["default"]) == sample[key], key
            checked.append(key)
    assert {"LEDGER_TABLE_NAME", "CANCEL_SAFETY_MARGIN_SECONDS", "MAINTENANCE_API_VERSION"} <= set(
        checked
    )


def test_heartbeat_workspace_is_optional_and_read_only() -> None:
    assert param(MAIN, "heartbeatWorkspaceResourceId")["default"] == ""
    assert _main_settings()["LOG_ANALYTICS_WORKSPACE_ID"] == (
        "empty(heartbeatWorkspaceResourceId) ? '' : heartbeatWorkspace.outputs.customerId"
    )
    heartbeat = module(MAIN, "heartbeatWorkspace")
    assert render(heartbeat["config"]["condition"]) == "!empty(heartbeatWorkspaceResourceId)"
    relative = "modules/heartbeat-workspace-access.bicep"
    assert variable(relative, "readerRole") == READER
    access = body(resource(relative, "access"))
    assert access["scope"] == "workspace"
    assert render(access["properties"]["roleDefinitionId"]).endswith("readerRole)")
    assert resource(relative, "workspace")["existing"] is True
    assert render(parse(relative)["outputs"]["customerId"]["value"]) == (
        "workspace.properties.customerId"
    )


def test_telemetry_authenticates_with_the_app_identity() -> None:
    platform = {k: render(v) for k, v in variable(MAIN, "platformSettings").items()}
    assert platform["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "ClientId=${appIdentity.properties.clientId};Authorization=AAD"
    )


# --- Function App -------------------------------------------------------------------------


def test_function_app_runs_python_311_on_flex_consumption_as_the_user_assigned_identity() -> None:
    plan = body(resource(FUNCTION_APP, "plan"))
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True
    site = body(resource(FUNCTION_APP, "site"))
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    assert list(site["identity"]["userAssignedIdentities"]) == ["'${identityId}'"]
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }
    assert body(module(MAIN, "functionApp"))["params"]["identityId"] == {
        "operator": {
            "type": "property_accessor",
            "operands": {"operand_1": "appIdentity", "operand_2": "id"},
        }
    }


def test_function_app_is_https_only_with_tls_12_and_no_ftp_or_basic_auth_publishing() -> None:
    site = body(resource(FUNCTION_APP, "site"))["properties"]
    assert site["httpsOnly"] is True
    assert site["siteConfig"]["minTlsVersion"] == "1.2"
    assert site["siteConfig"]["scmMinTlsVersion"] == "1.2"
    assert site["siteConfig"]["ftpsState"] == "Disabled"
    policies = resources(FUNCTION_APP, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {body(p)["name"]: body(p)["properties"]["allow"] for p in policies.values()} == {
        "ftp": False,
        "scm": False,
    }


def test_deployment_package_container_is_the_one_the_storage_module_creates() -> None:
    assert render(body(module(MAIN, "functionApp"))["params"]["deploymentContainerName"]) == (
        "deploymentContainerName"
    )
    assert render(body(module(MAIN, "storage"))["params"]["deploymentContainerName"]) == (
        "deploymentContainerName"
    )
    container = body(resource(STORAGE, "deploymentContainer"))
    assert container["name"] == "deploymentContainerName"
    assert container["properties"]["publicAccess"] == "None"


def test_azd_finds_the_function_app_by_its_service_tag() -> None:
    tags = render(body(resource(FUNCTION_APP, "site"))["tags"])
    assert "{'azd-service-name': api}" in tags


# --- Storage ------------------------------------------------------------------------------


def test_storage_account_refuses_shared_keys_public_blobs_plain_http_and_old_tls() -> None:
    props = body(resource(STORAGE, "storage"))["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["defaultToOAuthAuthentication"] is True
    assert props["allowBlobPublicAccess"] is False
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["minimumTlsVersion"] == "TLS1_2"


def test_storage_creates_the_ledger_table_and_both_queues_the_app_uses() -> None:
    assert body(resource(STORAGE, "ledgerTable"))["name"] == "ledgerTableName"
    assert body(resource(STORAGE, "eventQueue"))["name"] == "eventQueueName"
    assert body(resource(STORAGE, "taskQueue"))["name"] == "taskQueueName"
    assert variable(MAIN, "eventQueueName") == "maintenance-events"
    assert variable(MAIN, "taskQueueName") == "maintenance-tasks"
    passed = body(module(MAIN, "storage"))["params"]
    for name in ("ledgerTableName", "eventQueueName", "taskQueueName", "deadLetterContainerName"):
        assert passed[name] == name


def test_app_identity_gets_blob_queue_and_table_data_roles_on_the_account() -> None:
    roles = {variable(STORAGE, name) for name in variable(STORAGE, "appDataRoles")}
    assert roles == {
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",  # Storage Blob Data Owner
        "974c5e8b-45b9-4653-ba55-5f855dd0fb88",  # Storage Queue Data Contributor
        "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",  # Storage Table Data Contributor
    }
    access = resource(STORAGE, "appDataAccess")
    assert loop_source(access) == "appDataRoles"
    assert body(access)["scope"] == "storage"
    assert body(access)["properties"]["principalId"] == "appPrincipalId"
    assert render(body(module(MAIN, "storage"))["params"]["appPrincipalId"]) == (
        "appIdentity.properties.principalId"
    )


def test_event_grid_identity_may_only_send_to_the_event_queue_and_write_dead_letters() -> None:
    sender = body(resource(STORAGE, "eventGridQueueSender"))
    writer = body(resource(STORAGE, "eventGridDeadLetterWriter"))
    assert sender["scope"] == "eventQueue"
    assert render(sender["properties"]["roleDefinitionId"]).endswith(
        "storageQueueDataMessageSenderRole)"
    )
    assert writer["scope"] == "deadLetterContainer"
    assert render(writer["properties"]["roleDefinitionId"]).endswith(
        "storageBlobDataContributorRole)"
    )
    for assignment in (sender, writer):
        assert assignment["properties"]["principalId"] == "eventGridPrincipalId"
    assert render(body(module(MAIN, "storage"))["params"]["eventGridPrincipalId"]) == (
        "eventGridIdentity.properties.principalId"
    )


# --- Monitoring ---------------------------------------------------------------------------


def test_application_insights_disables_local_auth_and_is_backed_by_log_analytics() -> None:
    component = body(resource(MONITORING, "applicationInsights"))["properties"]
    assert component["DisableLocalAuth"] is True
    assert render(component["WorkspaceResourceId"]) == "workspace.id"
    assert resource(MONITORING, "workspace")["type"] == "Microsoft.OperationalInsights/workspaces"
    publisher = body(resource(MONITORING, "telemetryPublisher"))
    assert publisher["scope"] == "applicationInsights"
    assert publisher["properties"]["principalId"] == "publisherPrincipalId"
    assert render(body(module(MAIN, "monitoring"))["params"]["publisherPrincipalId"]) == (
        "appIdentity.properties.principalId"
    )


# --- Least privilege ----------------------------------------------------------------------


def test_vm_role_holds_only_read_start_and_deallocate_plus_snapshots_when_enabled() -> None:
    # Starts and deallocations are not polled: no operation status read. A snapshot's creation
    # is (the disk operation status read). Without it the role works only where Reader is
    # assigned at the same scope.
    assert set(variable(ROLES, "vmPowerActions")) == {
        "Microsoft.Compute/virtualMachines/read",
        "Microsoft.Compute/virtualMachines/instanceView/read",
        "Microsoft.Compute/virtualMachines/start/action",
        "Microsoft.Compute/virtualMachines/deallocate/action",
    }
    assert set(variable(ROLES, "snapshotActions")) == {
        "Microsoft.Compute/disks/read",
        "Microsoft.Compute/snapshots/read",
        "Microsoft.Compute/snapshots/write",
        "Microsoft.Compute/locations/diskOperations/read",
    }
    (permission,) = body(resource(ROLES, "vmPowerOperator"))["properties"]["permissions"]
    assert render(permission["actions"]) == (
        "concat(vmPowerActions, enableSnapshots ? snapshotActions : [])"
    )
    assert permission["notActions"] == []
    assert param(MAIN, "enableSnapshots")["default"] is False
    assert render(body(module(MAIN, "roles"))["params"]["enableSnapshots"]) == "enableSnapshots"


def test_maintenance_role_holds_only_configuration_read_and_run_read_and_write() -> None:
    assert set(variable(ROLES, "maintenanceRunActions")) == {
        "Microsoft.Maintenance/maintenanceConfigurations/read",
        "Microsoft.Maintenance/applyUpdates/read",
        "Microsoft.Maintenance/applyUpdates/write",
    }
    (permission,) = body(resource(ROLES, "maintenanceRunOperator"))["properties"]["permissions"]
    assert permission["actions"] == "maintenanceRunActions"


def test_custom_roles_are_assignable_only_where_they_are_assigned() -> None:
    roles = body(module(MAIN, "roles"))
    assert render(roles["scope"]) == "subscription()"
    assert render(roles["params"]["vmAssignableScopes"]) == (
        "concat(targetSubscriptionScopes, targetResourceGroupIds)"
    )
    assert roles["params"]["maintenanceAssignableScopes"] == "maintenanceResourceGroupIds"
    vm = body(resource(ROLES, "vmPowerOperator"))["properties"]
    maintenance = body(resource(ROLES, "maintenanceRunOperator"))["properties"]
    assert render(vm["assignableScopes"]) == "union(ownSubscription, vmAssignableScopes)"
    assert render(maintenance["assignableScopes"]) == (
        "union(ownSubscription, maintenanceAssignableScopes)"
    )


def test_role_definition_names_are_deterministic_per_installation() -> None:
    for name in ("vmPowerOperator", "maintenanceRunOperator"):
        guid = render(body(resource(ROLES, name))["name"])
        assert guid.startswith("guid(subscription().id, deploymentResourceGroupId, instanceName")


def test_target_subscriptions_get_reader_and_the_vm_role_on_each_subscription() -> None:
    access = module(MAIN, "subscriptionAccess")
    assert loop_source(access) == "targetSubscriptionIds"
    assert render(body(access)["scope"]) == f"subscription({loop_item(access)})"
    _assert_grants("modules/target-subscription-access.bicep", "vmPowerOperatorRoleName")
    assert render(body(access)["params"]["vmPowerOperatorRoleName"]) == (
        "roles.outputs.vmPowerOperatorRoleName"
    )


def test_target_resource_groups_get_reader_and_the_vm_role_on_each_group() -> None:
    access = module(MAIN, "resourceGroupAccess")
    item = loop_item(access)
    assert loop_source(access) == "targetResourceGroupIds"
    assert render(body(access)["scope"]) == (
        f"resource_group(split({item}, /)[2], split({item}, /)[4])"
    )
    _assert_grants("modules/target-resource-group-access.bicep", "vmPowerOperatorRoleName")


def test_each_maintenance_configuration_gets_reader_and_the_run_role_on_itself_only() -> None:
    access = module(MAIN, "maintenanceAccess")
    item = loop_item(access)
    assert loop_source(access) == "maintenanceConfigurationIds"
    assert render(body(access)["scope"]) == (
        f"resource_group(split({item}, /)[2], split({item}, /)[4])"
    )
    assert render(body(access)["params"]["maintenanceConfigurationName"]) == (
        f"last(split({item}, /))"
    )
    relative = "modules/maintenance-configuration-access.bicep"
    _assert_grants(relative, "maintenanceRunOperatorRoleName")
    assert body(resource(relative, "access"))["scope"] == "configuration"
    configuration = resource(relative, "configuration")
    assert configuration["existing"] is True
    assert configuration["type"] == "Microsoft.Maintenance/maintenanceConfigurations"


def test_run_write_is_never_granted_on_machine_scopes_nor_vm_power_on_configurations() -> None:
    for relative in (
        "modules/target-subscription-access.bicep",
        "modules/target-resource-group-access.bicep",
    ):
        assert "maintenanceRunOperatorRoleName" not in variable(relative, "roles")
    assert "vmPowerOperatorRoleName" not in variable(
        "modules/maintenance-configuration-access.bicep", "roles"
    )


def test_maintenance_configurations_are_required() -> None:
    assert param(MAIN, "maintenanceConfigurationIds")["default"] is None
    assert decorator(MAIN, "maintenanceConfigurationIds", "min_length") == 1


def _assert_grants(relative: str, custom_role_param: str) -> None:
    """The module assigns exactly Reader and the given custom role to the app principal."""
    assert variable(relative, "readerRole") == READER
    assert variable(relative, "roles") == ["readerRole", custom_role_param]
    access = resource(relative, "access")
    assert loop_source(access) == "roles"
    props = body(access)["properties"]
    assert props["principalId"] == "principalId"
    assert render(props["roleDefinitionId"]) == (
        f"subscription_resource_id(Microsoft.Authorization/roleDefinitions, {loop_item(access)})"
    )


# --- App Service authentication (issue 12 §1) ---------------------------------------------


def _authentication() -> dict[str, Any]:
    return resource(AUTHENTICATION, "authentication")


def test_authentication_is_deployed_only_when_a_client_id_is_given() -> None:
    assert param(MAIN, "authenticationClientId")["default"] == ""
    params = body(module(MAIN, "functionApp"))["params"]
    assert render(params["authenticationClientId"]) == "authenticationClientId"
    assert render(params["authenticationTenantId"]) == "tenant().tenantId"
    wiring = module(FUNCTION_APP, "authentication")
    assert render(wiring["config"]["condition"]) == "!empty(authenticationClientId)"
    assert {k: render(v) for k, v in body(wiring)["params"].items()} == {
        "siteName": "site.name",
        "clientId": "authenticationClientId",
        "tenantId": "authenticationTenantId",
    }
    site = resource(AUTHENTICATION, "site")
    assert site["existing"] is True
    assert render(body(site)["name"]) == "siteName"


def test_authentication_is_entra_id_on_the_app_with_the_api_audience() -> None:
    auth = body(_authentication())
    assert _authentication()["type"] == "Microsoft.Web/sites/config"
    assert render(auth["parent"]) == "site"
    assert auth["name"] == "authsettingsV2"
    properties = auth["properties"]
    assert properties["platform"]["enabled"] is True
    assert properties["httpSettings"]["requireHttps"] is True
    entra = properties["identityProviders"]["azureActiveDirectory"]
    assert entra["enabled"] is True
    assert render(entra["registration"]["clientId"]) == "clientId"
    assert render(entra["registration"]["openIdIssuer"]).endswith("${tenantId}/v2.0")
    assert "environment().authentication.loginEndpoint" in render(
        entra["registration"]["openIdIssuer"]
    )
    assert [render(a) for a in entra["validation"]["allowedAudiences"]] == ["api://${clientId}"]
    # No client secret: the API only validates bearer tokens, it never signs anyone in.
    assert "clientSecretSettingName" not in entra["registration"]
    assert properties["login"]["tokenStore"]["enabled"] is False


def test_authentication_guards_the_api_and_leaves_the_event_grid_webhook_open() -> None:
    validation = body(_authentication())["properties"]["globalValidation"]
    assert validation["requireAuthentication"] is True
    assert validation["unauthenticatedClientAction"] == "Return401"
    # Event Grid presents the extension's system key, never an Entra token.
    assert validation["excludedPaths"] == ["/runtime/webhooks/eventgrid"]


def test_the_app_never_sets_the_platforms_authentication_flag_itself() -> None:
    assert "WEBSITE_AUTH_ENABLED" not in _main_settings()
    assert "WEBSITE_AUTH_ENABLED" not in variable(MAIN, "platformSettings")


def test_run_reports_expire_by_a_lifecycle_rule_as_old_as_the_ledgers_retention() -> None:
    policy = body(resource(STORAGE, "lifecycle"))
    assert policy["name"] == "default"
    [rule] = policy["properties"]["policy"]["rules"]
    assert rule["enabled"] is True and rule["type"] == "Lifecycle"
    filters = rule["definition"]["filters"]
    assert filters["blobTypes"] == ["blockBlob"]
    assert [render(p) for p in filters["prefixMatch"]] == ["${reportContainerName}/"]
    delete = rule["definition"]["actions"]["baseBlob"]["delete"]
    assert render(delete["daysAfterModificationGreaterThan"]) == "reportRetentionDays"
    storage_params = body(module(MAIN, "storage"))["params"]
    assert render(storage_params["reportContainerName"]) == "reportContainerName"
    assert render(storage_params["reportRetentionDays"]) == "runRetentionDays"
    assert _main_settings()["RUN_RETENTION_DAYS"] == "string(runRetentionDays)"
    assert render(param(MAIN, "runRetentionDays")["default"]) == "90"
