from datetime import timedelta

import pytest

from shared.config import ConfigError, Settings

LOCAL = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}


def test_defaults_fill_in_what_is_not_set() -> None:
    settings = Settings.from_environ(LOCAL)
    assert settings.storage.connection_string == "UseDevelopmentStorage=true"
    assert settings.ledger_table == "maintenanceruns"
    assert settings.policy.cancel_safety_margin == timedelta(seconds=60)


def test_blank_values_count_as_unset() -> None:
    settings = Settings.from_environ({**LOCAL, "CANCEL_SAFETY_MARGIN_SECONDS": "  "})
    assert settings.policy.cancel_safety_margin == timedelta(seconds=60)


def test_identity_based_storage_builds_public_cloud_endpoints() -> None:
    settings = Settings.from_environ(
        {
            "AzureWebJobsStorage__accountName": "umautomation",
            "AzureWebJobsStorage__credential": "managedidentity",
            "AzureWebJobsStorage__clientId": "0b5c8a52-3f3e-4d4c-9f1a-6f0d2b7e9c11",
        }
    )
    assert settings.storage.connection_string is None
    assert settings.storage.table_endpoint == "https://umautomation.table.core.windows.net"
    assert settings.storage.queue_endpoint == "https://umautomation.queue.core.windows.net"
    assert settings.storage.managed_identity_client_id == "0b5c8a52-3f3e-4d4c-9f1a-6f0d2b7e9c11"


def test_explicit_service_uris_win_for_other_clouds() -> None:
    settings = Settings.from_environ(
        {
            "AzureWebJobsStorage__accountName": "umautomation",
            "AzureWebJobsStorage__tableServiceUri": "https://umautomation.table.core.chinacloudapi.cn/",
        }
    )
    assert settings.storage.table_endpoint == "https://umautomation.table.core.chinacloudapi.cn"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "AzureWebJobsStorage"),
        ({"AzureWebJobsStorage": "nonsense"}, "AzureWebJobsStorage"),
        ({"AzureWebJobsStorage__accountName": "Not_Valid"}, "AzureWebJobsStorage__accountName"),
        (
            {
                "AzureWebJobsStorage__accountName": "ok123",
                "AzureWebJobsStorage__credential": "secret",
            },
            "AzureWebJobsStorage__credential",
        ),
        (
            {"AzureWebJobsStorage__accountName": "ok123", "AzureWebJobsStorage__clientId": "me"},
            "AzureWebJobsStorage__clientId",
        ),
        (
            {"AzureWebJobsStorage__tableServiceUri": "http://plain"},
            "AzureWebJobsStorage__tableServiceUri",
        ),
        ({**LOCAL, "LEDGER_TABLE_NAME": "1bad"}, "LEDGER_TABLE_NAME"),
        ({**LOCAL, "LEDGER_TABLE_NAME": "ab"}, "LEDGER_TABLE_NAME"),
        ({**LOCAL, "CANCEL_SAFETY_MARGIN_SECONDS": "soon"}, "CANCEL_SAFETY_MARGIN_SECONDS"),
        ({**LOCAL, "CANCEL_SAFETY_MARGIN_SECONDS": "-1"}, "CANCEL_SAFETY_MARGIN_SECONDS"),
        ({**LOCAL, "CANCEL_SAFETY_MARGIN_SECONDS": "601"}, "CANCEL_SAFETY_MARGIN_SECONDS"),
    ],
)
def test_a_missing_or_bad_setting_fails_with_its_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ(env)
    assert caught.value.setting == named
    assert str(caught.value).startswith(f"Setting {named}:")


WEBHOOK_SECRET_PATH = "/webhookb2/SECRET-PATH-f00dfeed/IncomingWebhook/abc/def"


@pytest.mark.parametrize(
    "webhook",
    [
        f"http://hooks.example{WEBHOOK_SECRET_PATH}",
        f"https://{WEBHOOK_SECRET_PATH}",
        f"https://hooks.example{WEBHOOK_SECRET_PATH} trailing",
        f"https://[::1{WEBHOOK_SECRET_PATH}",
        f"hooks.example{WEBHOOK_SECRET_PATH}",
    ],
)
def test_a_malformed_webhook_turns_off_notifications_only_and_is_never_echoed(
    webhook: str,
) -> None:
    settings = Settings.from_environ({**LOCAL, "NOTIFY_WEBHOOK_URL": webhook})
    assert settings.notify_webhook_url is None
    disabled = settings.disabled("NOTIFY_WEBHOOK_URL")
    assert disabled is not None
    assert "NOTIFY_WEBHOOK_URL" in disabled.describe()
    assert "SECRET-PATH" not in disabled.describe()
    assert "not shown" in disabled.describe()
    # Everything else still reads as configured.
    assert settings.ledger_table == "maintenanceruns"


def test_a_malformed_heartbeat_workspace_or_endpoint_turns_off_the_check_only() -> None:
    workspace = "4a1b2c3d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
    bad_id = Settings.from_environ({**LOCAL, "LOG_ANALYTICS_WORKSPACE_ID": "my-workspace"})
    assert bad_id.log_analytics_workspace_id is None
    assert bad_id.policy.log_analytics_workspace_id is None
    assert bad_id.disabled("LOG_ANALYTICS_WORKSPACE_ID") is not None
    bad_endpoint = Settings.from_environ(
        {
            **LOCAL,
            "LOG_ANALYTICS_WORKSPACE_ID": workspace,
            "LOG_ANALYTICS_ENDPOINT": "https://api.loganalytics.io/v1?sig=SECRET-SAS",
        }
    )
    assert bad_endpoint.log_analytics_workspace_id is None
    assert bad_endpoint.log_analytics_endpoint == "https://api.loganalytics.io"
    described = bad_endpoint.disabled("LOG_ANALYTICS_ENDPOINT")
    assert described is not None
    assert "SECRET-SAS" not in described.describe()
    assert "query not shown" in described.describe()
    assert len(bad_endpoint.disabled_features) == 1


def test_a_malformed_allow_list_allows_nobody_and_keeps_the_app_up() -> None:
    settings = Settings.from_environ({**LOCAL, "CANCEL_ALLOWED_CALLERS": "ops@contoso"})
    assert settings.cancel_allowed_callers == frozenset()
    assert settings.disabled("CANCEL_ALLOWED_CALLERS") is not None


@pytest.mark.parametrize(
    ("value", "on"), [("True", True), ("true", True), ("False", False), ("", False), ("1", False)]
)
def test_only_the_platforms_true_turns_authentication_on(value: str, on: bool) -> None:
    settings = Settings.from_environ({**LOCAL, "WEBSITE_AUTH_ENABLED": value})
    assert settings.platform_authentication is on


def test_a_bad_secret_setting_is_named_but_never_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ(
            {"AzureWebJobsStorage": "AccountName=a;AccountKey=SECRET-KEY=="}
            | {"LEDGER_TABLE_NAME": "ok1", "REPORT_CONTAINER": "Bad_Name?sig=SECRET-SAS"}
        )
    assert caught.value.setting == "REPORT_CONTAINER"
    assert "SECRET" not in str(caught.value)
    assert caught.value.__cause__ is None
