#!/bin/sh
# azd postdeploy hook: stage 2 (Event Grid system topics and subscriptions), which needs the
# functions azd has just deployed. azd passes its environment (stage 1 outputs included).
# Uses the Azure CLI: run `az login` as well as `azd auth login`.
set -eu

: "${AZURE_RESOURCE_GROUP:?azd env set AZURE_RESOURCE_GROUP <resource group of the app>}"
: "${MAINTENANCE_CONFIGURATION_IDS:?azd env set MAINTENANCE_CONFIGURATION_IDS '[\"/subscriptions/.../maintenanceConfigurations/...\"]'}"

az deployment group create \
    --subscription "$AZURE_SUBSCRIPTION_ID" \
    --resource-group "$AZURE_RESOURCE_GROUP" \
    --name "${AZURE_ENV_NAME}-event-subscriptions" \
    --template-file infra/event-subscriptions.bicep \
    --parameters \
        maintenanceConfigurationIds="$MAINTENANCE_CONFIGURATION_IDS" \
        functionAppName="$AZURE_FUNCTION_APP_NAME" \
        storageAccountName="$AZURE_STORAGE_ACCOUNT_NAME" \
        eventGridIdentityName="$EVENT_GRID_IDENTITY_NAME" \
        deliverToQueue="${DELIVER_TO_QUEUE:-false}" \
    --output none
echo "Stage 2 deployed: Event Grid system topics and subscriptions for $MAINTENANCE_CONFIGURATION_IDS"
