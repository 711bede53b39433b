"""Every setting the app (or its host) reads: its name, default, description and who reads it.

This is the single list. A test keeps it, the README's settings table and
local.settings.sample.json in step; shared/config.py reads and validates the values.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SettingSpec:
    """One setting: its name, default, and the value local.settings.sample.json gives it."""

    name: str
    default: str | None
    description: str
    read_by: str = "app"
    # A secret's value is never echoed: errors name the setting only.
    secret: bool = False


STORAGE = "AzureWebJobsStorage"
SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "FUNCTIONS_WORKER_RUNTIME",
        "python",
        "Functions host: the language worker (not set on Flex Consumption).",
        "host",
    ),
    SettingSpec(
        "PYTHON_THREADPOOL_THREAD_COUNT",
        "32",
        "Python worker: threads that run the app's functions. The worker's own default is "
        "min(32, cores + 4), 5 on a one-core instance, fewer than the 12 queue invocations "
        "host.json lets run at once (batchSize 8 + newBatchThreshold 4); 32 leaves 20 threads "
        "for Event Grid events, HTTP requests and the timer while a fan-out runs.",
        "host",
    ),
    SettingSpec(
        STORAGE,
        None,
        "Storage connection string for the host and the run ledger. Locally "
        "`UseDevelopmentStorage=true` or an Azurite connection string. In Azure leave it "
        "unset and use the identity-based settings below.",
        secret=True,
    ),
    SettingSpec(
        f"{STORAGE}__accountName",
        None,
        "Identity-based storage: the storage account name (public cloud endpoints).",
    ),
    SettingSpec(
        f"{STORAGE}__tableServiceUri",
        None,
        "Identity-based storage: the Table endpoint, for other clouds "
        "(overrides the account name).",
    ),
    SettingSpec(
        f"{STORAGE}__queueServiceUri",
        None,
        "Identity-based storage: the Queue endpoint, for other clouds "
        "(overrides the account name).",
    ),
    SettingSpec(
        f"{STORAGE}__blobServiceUri",
        None,
        "Identity-based storage: the Blob endpoint (run reports), for other clouds "
        "(overrides the account name).",
    ),
    SettingSpec(f"{STORAGE}__credential", None, "Identity-based storage: `managedidentity`."),
    SettingSpec(
        f"{STORAGE}__clientId",
        None,
        "Identity-based storage: client id of the user-assigned managed identity.",
    ),
    SettingSpec(
        "LEDGER_TABLE_NAME",
        "maintenanceruns",
        "Table that holds the run ledger (3-63 letters and digits, starting with a letter).",
    ),
    SettingSpec(
        "MANAGED_IDENTITY_CLIENT_ID",
        None,
        "Client id of the user-assigned managed identity used for Azure calls (ARM, Resource "
        "Graph, Log Analytics). Unset: the system-assigned identity.",
    ),
    SettingSpec(
        "ARM_ENDPOINT",
        "https://management.azure.com",
        "Azure Resource Manager endpoint (sovereign clouds differ); also the token audience "
        "for ARM and Resource Graph.",
    ),
    SettingSpec(
        "AZURE_AUTHORITY_HOST",
        "https://login.microsoftonline.com",
        "Microsoft Entra authority for the developer credential used outside Azure.",
    ),
    SettingSpec(
        "LOG_ANALYTICS_ENDPOINT",
        "https://api.loganalytics.io",
        "Log Analytics query endpoint (sovereign clouds differ); also its token audience.",
    ),
    SettingSpec(
        "LOG_ANALYTICS_WORKSPACE_ID",
        None,
        "Workspace (customer) id for the post-run heartbeat check. Unset: no check. "
        "Malformed: no check, with an ERROR; everything else keeps working.",
    ),
    SettingSpec(
        "MAINTENANCE_API_VERSION",
        "2023-09-01-preview",
        "api-version of the applyUpdates cancel and read calls; one that can cancel "
        "(2023-09-01-preview or later).",
    ),
    SettingSpec(
        "REPORT_CONTAINER",
        "run-reports",
        "Blob container for the run reports (one JSON document per run).",
    ),
    SettingSpec(
        "RUN_RETENTION_DAYS",
        "90",
        "Runs scheduled longer ago than this are removed from the ledger by the reconcile timer, "
        "a bounded batch a tick (1-3650). Report blobs expire by the storage lifecycle rule in "
        "infra/ (keep the two in step).",
    ),
    SettingSpec(
        "OPT_OUT_TAG",
        "UpdateAutomation=skip",
        "Machines with this tag are never started or stopped: `name=value`, or `name` for any "
        "value (case-insensitive).",
    ),
    SettingSpec(
        "FAILURE_BUDGET_PERCENT",
        "10",
        "The gate cancels the run (inside the window) when more than this percentage of the "
        "VMs the app had to start are not running by T-15 (0-100).",
    ),
    SettingSpec(
        "START_BATCH_SIZE",
        "50",
        "Machines per start or stop task message (1-150: a queue message holds 150 of the "
        "longest ARM ids, with their power states).",
    ),
    SettingSpec(
        "START_CONCURRENCY",
        "4",
        "Start/stop calls in flight per task. Total concurrency is this times the host's queue "
        "batch size (host.json `batchSize`, or AzureFunctionsJobHost__extensions__queues__"
        "batchSize) times the instance count (1-64). Pacing sends at most 10 writes a second "
        "per subscription, so more threads only compete with the event intake for the CPU.",
    ),
    SettingSpec(
        "VERIFY_INTERVAL_SECONDS",
        "60",
        "How often power states are re-read until every started VM runs or T-15 passes (1-600).",
    ),
    SettingSpec(
        "ARG_RETRY_SECONDS",
        "30",
        "Wait between Resource Graph re-reads while it lags behind the platform (1-600).",
    ),
    SettingSpec(
        "WRAP_UP_WAIT_MINUTES",
        "120",
        "How long wrap-up waits for Resource Graph to show the run's machines finished (1-1440).",
    ),
    SettingSpec(
        "HEALTH_WAIT_MINUTES",
        "15",
        "How long the health check waits for heartbeats after the run (0-240).",
    ),
    SettingSpec(
        "OPERATION_WAIT_SECONDS",
        "240",
        "How long a start task waits for an OS-disk snapshot (SNAPSHOT_BEFORE_START) before "
        "starting the VM; starts and deallocations are never waited on (1-540; keep below "
        "host.json functionTimeout).",
    ),
    SettingSpec(
        "TASK_LEASE_SECONDS",
        "45",
        "How long a start or stop intent stays a live worker's without renewal; after a host "
        "crash its machines are picked up again once it lapses (3-600).",
    ),
    SettingSpec(
        "SNAPSHOT_BEFORE_START",
        "false",
        "Take an incremental snapshot of each VM's OS disk before starting it, named "
        "`<vm>-osdisk-um-<run name>` (true/false).",
    ),
    SettingSpec(
        "NOTIFY_WEBHOOK_URL",
        None,
        "Teams/Slack-style incoming webhook for run reports (https). Unset: no notification. "
        "It holds a secret: in Azure use a Key Vault reference. Malformed: notifications are "
        "off (an ERROR names the setting, never its value); everything else keeps working.",
        secret=True,
    ),
    SettingSpec(
        "RECONCILE_SCHEDULE",
        "0 */5 * * * *",
        "NCRONTAB schedule (six fields, UTC) of the reconcile timer; the host reads it "
        "through the binding expression %RECONCILE_SCHEDULE%.",
        "host",
    ),
    SettingSpec(
        "TARGET_SUBSCRIPTION_IDS",
        None,
        "Comma-separated subscriptions whose maintenance runs the reconciler reads (besides "
        "every configuration the ledger knows).",
    ),
    SettingSpec(
        "TARGET_CONFIGURATION_IDS",
        None,
        "Comma-separated maintenance configuration ids the reconciler reads (besides every "
        "configuration the ledger knows).",
    ),
    SettingSpec(
        "CANCEL_ALLOWED_CALLERS",
        None,
        "Comma-separated Entra object ids allowed to cancel runs. Needs App Service "
        "authentication (WEBSITE_AUTH_ENABLED): without it every cancel is refused (403). "
        "Unset: anyone holding a function key. Malformed: every cancel is refused, with an "
        "ERROR; events and tasks keep working.",
    ),
    SettingSpec(
        "WEBSITE_AUTH_ENABLED",
        "False",
        "Set by App Service when its authentication is on (`True`); only then are the "
        "x-ms-client-principal headers trusted. Do not set it yourself in Azure.",
    ),
    SettingSpec(
        "CANCEL_SAFETY_MARGIN_SECONDS",
        "60",
        "Seconds taken off the end of the cancel window, so a cancel never races the "
        "platform's cut-off (0-600).",
    ),
)
SECRET_SETTINGS = frozenset(spec.name for spec in SETTINGS if spec.secret)
