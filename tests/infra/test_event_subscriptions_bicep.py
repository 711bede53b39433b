"""Stage 2 (infra/event-subscriptions.bicep): a system topic per maintenance configuration and
pre/post subscriptions that name the right event types and functions, dead-letter, retry as
intended, and can deliver to the Storage queue instead."""

from __future__ import annotations

import ast
from pathlib import Path
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
    variable,
)

STAGE2 = "event-subscriptions.bicep"
TOPIC = "modules/maintenance-event-topic.bicep"
PRE = "Microsoft.Maintenance.PreMaintenanceEvent"
POST = "Microsoft.Maintenance.PostMaintenanceEvent"


def _subscriptions() -> dict[str, dict[str, str]]:
    """The eventSubscriptions entries of stage 2, by event type, values as text."""
    return {
        entry["eventType"]: {k: render(v) for k, v in entry.items()}
        for entry in variable(STAGE2, "eventSubscriptions")
    }


def _app_triggers() -> dict[str, tuple[str, str | None]]:
    """Functions in shared/entrypoints: name -> (trigger decorator, queue name if any)."""
    found: dict[str, tuple[str, str | None]] = {}
    for path in sorted(Path(REPO / "shared" / "entrypoints").glob("*.py")):
        tree = ast.parse(path.read_text())
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name) and isinstance(node.value.value, str)
        }
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute):
                    queue = next((k.value for k in deco.keywords if k.arg == "queue_name"), None)
                    queue_name: str | None = None
                    if isinstance(queue, ast.Name):
                        queue_name = constants.get(queue.id)
                    elif isinstance(queue, ast.Constant) and isinstance(queue.value, str):
                        queue_name = queue.value
                    found[node.name] = (deco.func.attr, queue_name)
    return found


def test_there_is_one_pre_and_one_post_subscription_each_naming_its_function() -> None:
    subscriptions = _subscriptions()
    assert set(subscriptions) == {PRE, POST}
    assert subscriptions[PRE]["functionName"] == "on_pre_maintenance_event"
    assert subscriptions[POST]["functionName"] == "on_post_maintenance_event"
    assert subscriptions[PRE]["name"] != subscriptions[POST]["name"]


def test_subscribed_functions_are_event_grid_triggers_of_the_app() -> None:
    triggers = _app_triggers()
    for subscription in _subscriptions().values():
        assert triggers.get(subscription["functionName"], ("missing",))[0] == (
            "event_grid_trigger"
        ), subscription["functionName"]


def test_queue_delivery_uses_the_queue_the_app_listens_on() -> None:
    queues = {queue for _, queue in _app_triggers().values() if queue}
    assert variable(STAGE2, "eventQueueName") in queues
    assert variable(STAGE2, "eventQueueName") == variable("main.bicep", "eventQueueName")


def test_each_configuration_gets_a_system_topic_of_the_maintenance_topic_type() -> None:
    topics = module(STAGE2, "topics")
    item = loop_item(topics)
    assert loop_source(topics) == "maintenanceConfigurationIds"
    assert render(body(topics)["scope"]) == (
        f"resource_group(split({item}, /)[2], split({item}, /)[4])"
    )
    assert render(body(topics)["params"]["maintenanceConfigurationName"]) == (
        f"last(split({item}, /))"
    )
    topic = body(resource(TOPIC, "topic"))
    assert topic["properties"]["topicType"] == "Microsoft.Maintenance.MaintenanceConfigurations"
    assert render(topic["properties"]["source"]) == "configuration.id"
    assert render(topic["location"]) == "configuration.location"
    configuration = resource(TOPIC, "configuration")
    assert configuration["existing"] is True
    assert configuration["type"] == "Microsoft.Maintenance/maintenanceConfigurations"


def test_each_subscription_filters_on_its_own_event_type() -> None:
    subscriptions = resource(TOPIC, "subscriptions")
    item = loop_item(subscriptions)
    assert loop_source(subscriptions) == "eventSubscriptions"
    assert render(body(subscriptions)["parent"]) == "topic"
    common = _union_args()[1]
    assert render(common["filter"]) == f"{{includedEventTypes: [{item}.eventType]}}"
    assert render(body(subscriptions)["name"]) == f"{item}.name"
    assert render(body(module(STAGE2, "topics"))["params"]["eventSubscriptions"]) == (
        "eventSubscriptions"
    )


def test_events_go_to_the_azure_function_of_the_subscription_by_default() -> None:
    assert param(STAGE2, "deliverToQueue")["default"] is False
    item = loop_item(resource(TOPIC, "subscriptions"))
    delivery = _union_args()[0]["operator"]["operands"]
    assert delivery["condition"] == "deliverToQueue"
    destination = delivery["false_value"]["destination"]
    assert destination["endpointType"] == "AzureFunction"
    assert destination["properties"]["resourceId"] == (
        f"${{functionAppId}}/functions/${{{item}.functionName}}"
    )
    assert destination["properties"]["maxEventsPerBatch"] == 1
    assert render(body(module(STAGE2, "topics"))["params"]["functionAppId"]) == "functionApp.id"


def test_queue_delivery_goes_to_the_event_queue_with_the_event_grid_identity() -> None:
    delivery = _union_args()[0]["operator"]["operands"]
    assert delivery["true_value"] == "queueDelivery"
    queue = variable(TOPIC, "queueDelivery")["deliveryWithResourceIdentity"]
    assert queue["identity"] == "deliveryIdentity"
    assert queue["destination"]["endpointType"] == "StorageQueue"
    assert queue["destination"]["properties"] == {
        "resourceId": "storageAccountId",
        "queueName": "eventQueueName",
    }
    assert render(variable(TOPIC, "deliveryIdentity")) == (
        "{type: UserAssigned, userAssignedIdentity: eventGridIdentityId}"
    )


def test_undeliverable_events_are_dead_lettered_to_the_blob_container_with_the_identity() -> None:
    dead_letter = _union_args()[1]["deadLetterWithResourceIdentity"]
    assert dead_letter["identity"] == "deliveryIdentity"
    assert dead_letter["deadLetterDestination"]["endpointType"] == "StorageBlob"
    assert dead_letter["deadLetterDestination"]["properties"] == {
        "resourceId": "storageAccountId",
        "blobContainerName": "deadLetterContainerName",
    }
    assert variable(STAGE2, "deadLetterContainerName") == variable(
        "main.bicep", "deadLetterContainerName"
    )
    identity = body(resource(TOPIC, "topic"))["identity"]
    assert identity == {
        "type": "UserAssigned",
        "userAssignedIdentities": {"'${eventGridIdentityId}'": {}},
    }


def test_pre_event_retries_briefly_and_post_event_keeps_event_grid_defaults() -> None:
    subscriptions = _subscriptions()
    pre, post = subscriptions[PRE], subscriptions[POST]
    assert post["maxDeliveryAttempts"] == "30"
    assert post["eventTimeToLiveInMinutes"] == "1440"
    assert pre["maxDeliveryAttempts"] == "preEventMaxDeliveryAttempts"
    assert pre["eventTimeToLiveInMinutes"] == "preEventTimeToLiveInMinutes"
    # A pre event arrives T-40..T-30 and is useless after the cut-off (about T-10).
    assert param(STAGE2, "preEventTimeToLiveInMinutes")["default"] <= 20
    assert decorator(STAGE2, "preEventTimeToLiveInMinutes", "max_value") <= 30
    assert param(STAGE2, "preEventMaxDeliveryAttempts")["default"] < 30
    item = loop_item(resource(TOPIC, "subscriptions"))
    assert render(_union_args()[1]["retryPolicy"]) == (
        f"{{maxDeliveryAttempts: {item}.maxDeliveryAttempts, "
        f"eventTimeToLiveInMinutes: {item}.eventTimeToLiveInMinutes}}"
    )


def test_stage_two_reads_stage_one_resources_by_the_names_stage_one_outputs() -> None:
    existing = {name: r["type"] for name, r in parse(STAGE2)["resources"].items() if r["existing"]}
    assert existing == {
        "functionApp": "Microsoft.Web/sites",
        "storage": "Microsoft.Storage/storageAccounts",
        "eventGridIdentity": "Microsoft.ManagedIdentity/userAssignedIdentities",
    }
    outputs = parse("main.bicep")["outputs"]
    assert render(outputs["AZURE_FUNCTION_APP_NAME"]["value"]) == "functionApp.outputs.name"
    assert render(outputs["AZURE_STORAGE_ACCOUNT_NAME"]["value"]) == "storage.outputs.name"
    assert render(outputs["EVENT_GRID_IDENTITY_NAME"]["value"]) == "eventGridIdentity.name"


def _union_args() -> tuple[dict[str, Any], dict[str, Any]]:
    """The two objects `properties: union(delivery, common)` of the subscription resource."""
    properties = body(resource(TOPIC, "subscriptions"))["properties"]["function"]
    assert properties["type"] == "union"
    delivery, common = properties["parameters"].values()
    return delivery, common


def test_topic_names_stay_unique_when_configuration_names_differ_only_in_dropped_characters() -> (
    None
):
    # 'a_b', 'a.b' and 'a-b' all become 'a-b': the configuration id's hash tells them apart.
    assert render(body(resource(TOPIC, "topic"))["name"]) == (
        "${topicNameStem}-${topicNameHash}-events"
    )
    assert render(variable(TOPIC, "topicNameHash")) == "take(unique_string(configuration.id), 8)"
    assert render(variable(TOPIC, "topicNameStem")) == (
        "take(replace(replace(maintenanceConfigurationName, _, -), ., -), 110)"
    )
    # The longest name fits the 128 characters Event Grid allows.
    assert 110 + len("-") + 8 + len("-events") <= 128
