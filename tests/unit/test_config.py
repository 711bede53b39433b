from datetime import timedelta

import pytest

from shared.config import ConfigError, Settings

LOCAL = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}


def test_defaults_fill_in_what_is_not_set() -> None:
    settings = Settings.from_environ(LOCAL)
    assert settings.storage.connection_string == "UseDevelopmentStorage=true"
    assert settings.ledger_table == "maintenanceruns"
    assert settings.cancel_safety_margin == timedelta(seconds=60)


def test_blank_values_count_as_unset() -> None:
    settings = Settings.from_environ({**LOCAL, "CANCEL_SAFETY_MARGIN_SECONDS": "  "})
    assert settings.cancel_safety_margin == timedelta(seconds=60)


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
