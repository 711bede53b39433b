// Stage 1 of 2: everything the Update Manager events app needs except the Event Grid wiring,
// which needs the published functions (infra/event-subscriptions.bicep, stage 2).
//
//   az deployment group create --resource-group <rg> --template-file infra/main.bicep ...
//
// Deploys into the app's resource group: identities, storage, monitoring, the Flex Consumption
// Function App; and, through modules at other scopes, the two custom roles (this subscription)
// and the app identity's role assignments on the target subscriptions / resource groups and on
// each maintenance configuration. Nowhere Owner or Contributor. See the README (Deploy).
targetScope = 'resourceGroup'

@description('Short name of this installation; prefixes resource names (3-20 lowercase letters, digits, hyphens).')
@minLength(3)
@maxLength(20)
param appName string

@description('Region of the app resources.')
param location string = resourceGroup().location

@description('Tags applied to every resource.')
param tags object = {}

@description('Subscription ids (GUIDs) whose VMs the app starts and deallocates. Reader and the VM power operator role are granted on each whole subscription.')
param targetSubscriptionIds array = []

@description('Resource group ids (/subscriptions/<id>/resourceGroups/<name>) whose VMs the app manages, when a whole subscription is too broad.')
param targetResourceGroupIds array = []

@description('Resource ids of the maintenance configurations whose runs the app handles; the app may read their runs and cancel a run.')
@minLength(1)
param maintenanceConfigurationIds array

@description('Also grant the disk snapshot actions (disks read, snapshots read and write) on the target scopes.')
param enableSnapshots bool = false

@description('Table holding the run ledger (LEDGER_TABLE_NAME).')
@minLength(3)
@maxLength(63)
param ledgerTableName string = 'maintenanceruns'

@description('Seconds taken off the end of the cancel window (CANCEL_SAFETY_MARGIN_SECONDS).')
@minValue(0)
@maxValue(600)
param cancelSafetyMarginSeconds int = 60

@description('api-version of the Maintenance applyUpdates calls (MAINTENANCE_API_VERSION); one that can cancel: 2023-09-01-preview or later.')
param maintenanceApiVersion string = '2023-09-01-preview'

@description('Blob container for the run reports (REPORT_CONTAINER).')
param reportContainerName string = 'run-reports'

@description('Days a run is kept: the reconcile timer removes older runs from the ledger (RUN_RETENTION_DAYS) and a storage lifecycle rule deletes their report blobs.')
@minValue(1)
@maxValue(3650)
param runRetentionDays int = 90

@description('Tag that keeps a machine out of the app\'s hands (OPT_OUT_TAG): name=value, or name for any value.')
param optOutTag string = 'UpdateAutomation=skip'

@description('The gate cancels a run when more than this percentage of the VMs the app started are not running by T-15 (FAILURE_BUDGET_PERCENT).')
param failureBudgetPercent string = '10'

@description('Machines per start/stop task message (START_BATCH_SIZE).')
@minValue(1)
@maxValue(150)
param startBatchSize int = 50

@description('Start/stop calls in flight per task (START_CONCURRENCY).')
@minValue(1)
@maxValue(64)
param startConcurrency int = 4

@description('Seconds between power-state checks until T-15 (VERIFY_INTERVAL_SECONDS).')
@minValue(5)
@maxValue(600)
param verifyIntervalSeconds int = 60

@description('Seconds between Resource Graph re-reads while it lags (ARG_RETRY_SECONDS).')
@minValue(5)
@maxValue(600)
param argRetrySeconds int = 30

@description('Minutes wrap-up waits for Resource Graph to show the machines finished (WRAP_UP_WAIT_MINUTES).')
@minValue(1)
@maxValue(1440)
param wrapUpWaitMinutes int = 120

@description('Minutes the health check waits for heartbeats (HEALTH_WAIT_MINUTES).')
@minValue(0)
@maxValue(240)
param healthWaitMinutes int = 15

@description('Seconds a start task waits for an OS-disk snapshot before starting the VM (OPERATION_WAIT_SECONDS); starts and deallocations are never waited on.')
@minValue(10)
@maxValue(540)
param operationWaitSeconds int = 240

@description('Seconds a start or stop intent stays a live worker\'s without renewal; after a host crash its machines are picked up again once it lapses (TASK_LEASE_SECONDS).')
@minValue(3)
@maxValue(600)
param taskLeaseSeconds int = 45

@description('Teams/Slack-style incoming webhook for run reports (NOTIFY_WEBHOOK_URL); best a Key Vault reference: @Microsoft.KeyVault(SecretUri=...). Empty: no notification.')
@secure()
param notifyWebhookUrl string = ''

@description('NCRONTAB schedule of the reconcile timer (RECONCILE_SCHEDULE).')
param reconcileSchedule string = '0 */5 * * * *'

@description('Entra object ids allowed to cancel runs through the API (CANCEL_ALLOWED_CALLERS); empty: any holder of a function key. Needs authenticationClientId: without App Service authentication every cancel is refused.')
param cancelAllowedCallers array = []

@description('Client id of a Microsoft Entra app registration (exposing api://<client id>) for App Service authentication of the operator API; operators then send a bearer token for it as well as the function key. Empty: authentication off.')
param authenticationClientId string = ''

@description('Log Analytics query endpoint of this cloud (LOG_ANALYTICS_ENDPOINT): https://api.loganalytics.io (public), https://api.loganalytics.us (US Government), https://api.loganalytics.azure.cn (China).')
param logAnalyticsEndpoint string = 'https://api.loganalytics.io'

@description('Resource id of the Log Analytics workspace the VMs send heartbeats to, for the post-run health check; the app gets Reader on it. Empty: no check.')
param heartbeatWorkspaceResourceId string = ''

@description('Replication of the app storage account (the run ledger lives there).')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param storageSkuName string = 'Standard_ZRS'

@description('Days the Log Analytics workspace keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

@description('Upper bound of Function App instances.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each Function App instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

// Fixed names the app's code uses (function_app.py triggers and shared/ adapters).
var eventQueueName = 'maintenance-events'
var taskQueueName = 'maintenance-tasks'
var deploymentContainerName = 'app-package'
var deadLetterContainerName = 'eventgrid-deadletter'

var suffix = uniqueString(resourceGroup().id, appName)
var functionAppName = 'func-${appName}-${suffix}'
var storageAccountName = 'st${suffix}'

// Resource groups of the maintenance configurations: where their custom role may be assigned.
var maintenanceResourceGroupIds = [for id in maintenanceConfigurationIds: '/subscriptions/${split(id, '/')[2]}/resourceGroups/${split(id, '/')[4]}']
var targetSubscriptionScopes = [for id in targetSubscriptionIds: '/subscriptions/${id}']

resource appIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${appName}-app'
  location: location
  tags: tags
}

// Event Grid delivers to the event queue and dead-letters with its own identity, never the app's.
resource eventGridIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${appName}-eventgrid'
  location: location
  tags: tags
}

// ═════════════════════════════════════════════════════════════════════════════════════════════
// APP SETTINGS: every setting the app reads, one line each. Adding a setting: add its line here
// (and a parameter if its value differs per installation). tests/infra checks that these keys
// are exactly the "Values" keys of local.settings.sample.json, except:
//   FUNCTIONS_WORKER_RUNTIME  Flex Consumption takes the runtime from functionAppConfig and
//                             rejects this setting.
//   AzureWebJobsStorage       the connection string: shared keys are off, so the identity-based
//                             AzureWebJobsStorage__* settings below replace it.
// No secrets: a secret goes in as a Key Vault reference, resolved with the app's identity:
//   NAME: '@Microsoft.KeyVault(SecretUri=${secretUri})'
// ═════════════════════════════════════════════════════════════════════════════════════════════
var appSettings = {
  // The Python worker's thread pool (README: "Threads and queue concurrency").
  PYTHON_THREADPOOL_THREAD_COUNT: '32'
  AzureWebJobsStorage__accountName: storage.outputs.name
  AzureWebJobsStorage__tableServiceUri: storage.outputs.tableEndpoint
  AzureWebJobsStorage__queueServiceUri: storage.outputs.queueEndpoint
  AzureWebJobsStorage__blobServiceUri: storage.outputs.blobEndpoint
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: appIdentity.properties.clientId
  LEDGER_TABLE_NAME: ledgerTableName
  MANAGED_IDENTITY_CLIENT_ID: appIdentity.properties.clientId
  ARM_ENDPOINT: environment().resourceManager
  AZURE_AUTHORITY_HOST: environment().authentication.loginEndpoint
  LOG_ANALYTICS_ENDPOINT: logAnalyticsEndpoint
  LOG_ANALYTICS_WORKSPACE_ID: empty(heartbeatWorkspaceResourceId) ? '' : heartbeatWorkspace.outputs.customerId
  MAINTENANCE_API_VERSION: maintenanceApiVersion
  CANCEL_SAFETY_MARGIN_SECONDS: string(cancelSafetyMarginSeconds)
  REPORT_CONTAINER: reportContainerName
  RUN_RETENTION_DAYS: string(runRetentionDays)
  OPT_OUT_TAG: optOutTag
  FAILURE_BUDGET_PERCENT: failureBudgetPercent
  START_BATCH_SIZE: string(startBatchSize)
  START_CONCURRENCY: string(startConcurrency)
  VERIFY_INTERVAL_SECONDS: string(verifyIntervalSeconds)
  ARG_RETRY_SECONDS: string(argRetrySeconds)
  WRAP_UP_WAIT_MINUTES: string(wrapUpWaitMinutes)
  HEALTH_WAIT_MINUTES: string(healthWaitMinutes)
  OPERATION_WAIT_SECONDS: string(operationWaitSeconds)
  TASK_LEASE_SECONDS: string(taskLeaseSeconds)
  SNAPSHOT_BEFORE_START: enableSnapshots ? 'true' : 'false'
  NOTIFY_WEBHOOK_URL: notifyWebhookUrl
  RECONCILE_SCHEDULE: reconcileSchedule
  TARGET_SUBSCRIPTION_IDS: join(targetSubscriptionIds, ',')
  TARGET_CONFIGURATION_IDS: join(maintenanceConfigurationIds, ',')
  CANCEL_ALLOWED_CALLERS: join(cancelAllowedCallers, ',')
}

// Settings only the platform reads (telemetry with Entra ID auth); not in the sample file.
var platformSettings = {
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${appIdentity.properties.clientId};Authorization=AAD'
}

module storage 'modules/storage.bicep' = {
  name: '${appName}-storage'
  params: {
    name: storageAccountName
    location: location
    tags: tags
    skuName: storageSkuName
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: deadLetterContainerName
    ledgerTableName: ledgerTableName
    reportContainerName: reportContainerName
    reportRetentionDays: runRetentionDays
    eventQueueName: eventQueueName
    taskQueueName: taskQueueName
    appPrincipalId: appIdentity.properties.principalId
    eventGridPrincipalId: eventGridIdentity.properties.principalId
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: '${appName}-monitoring'
  params: {
    workspaceName: 'log-${appName}-${suffix}'
    applicationInsightsName: 'appi-${appName}-${suffix}'
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
    publisherPrincipalId: appIdentity.properties.principalId
  }
}

module functionApp 'modules/function-app.bicep' = {
  name: '${appName}-function-app'
  params: {
    name: functionAppName
    planName: 'plan-${appName}-${suffix}'
    location: location
    tags: tags
    identityId: appIdentity.id
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    appSettings: union(appSettings, platformSettings)
    authenticationClientId: authenticationClientId
    authenticationTenantId: tenant().tenantId
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
}

module roles 'modules/role-definitions.bicep' = {
  name: '${appName}-roles-${suffix}'
  scope: subscription()
  params: {
    instanceName: functionAppName
    deploymentResourceGroupId: resourceGroup().id
    vmAssignableScopes: concat(targetSubscriptionScopes, targetResourceGroupIds)
    maintenanceAssignableScopes: maintenanceResourceGroupIds
    enableSnapshots: enableSnapshots
  }
}

module subscriptionAccess 'modules/target-subscription-access.bicep' = [for subscriptionId in targetSubscriptionIds: {
  name: '${appName}-access-${uniqueString(resourceGroup().id, subscriptionId)}'
  scope: subscription(subscriptionId)
  params: {
    principalId: appIdentity.properties.principalId
    vmPowerOperatorRoleName: roles.outputs.vmPowerOperatorRoleName
  }
}]

module resourceGroupAccess 'modules/target-resource-group-access.bicep' = [for resourceGroupId in targetResourceGroupIds: {
  name: '${appName}-access-${uniqueString(resourceGroup().id, resourceGroupId)}'
  scope: resourceGroup(split(resourceGroupId, '/')[2], split(resourceGroupId, '/')[4])
  params: {
    principalId: appIdentity.properties.principalId
    vmPowerOperatorRoleName: roles.outputs.vmPowerOperatorRoleName
  }
}]

module maintenanceAccess 'modules/maintenance-configuration-access.bicep' = [for configurationId in maintenanceConfigurationIds: {
  name: '${appName}-access-${uniqueString(resourceGroup().id, configurationId)}'
  scope: resourceGroup(split(configurationId, '/')[2], split(configurationId, '/')[4])
  params: {
    maintenanceConfigurationName: last(split(configurationId, '/'))
    principalId: appIdentity.properties.principalId
    maintenanceRunOperatorRoleName: roles.outputs.maintenanceRunOperatorRoleName
  }
}]

module heartbeatWorkspace 'modules/heartbeat-workspace-access.bicep' = if (!empty(heartbeatWorkspaceResourceId)) {
  name: '${appName}-heartbeat-${uniqueString(resourceGroup().id, heartbeatWorkspaceResourceId)}'
  // ARM evaluates the scope even when the condition is false: no split() of an empty id then.
  scope: resourceGroup(empty(heartbeatWorkspaceResourceId) ? subscription().subscriptionId : split(heartbeatWorkspaceResourceId, '/')[2], empty(heartbeatWorkspaceResourceId) ? resourceGroup().name : split(heartbeatWorkspaceResourceId, '/')[4])
  params: {
    workspaceName: last(split(heartbeatWorkspaceResourceId, '/'))
    principalId: appIdentity.properties.principalId
  }
}

// Upper-case names: azd copies outputs into its environment; infra/hooks/postdeploy.sh reads them.
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_HOST string = functionApp.outputs.defaultHostName
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output EVENT_GRID_IDENTITY_NAME string = eventGridIdentity.name
output APP_IDENTITY_CLIENT_ID string = appIdentity.properties.clientId
output APP_IDENTITY_PRINCIPAL_ID string = appIdentity.properties.principalId
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output VM_POWER_OPERATOR_ROLE_NAME string = roles.outputs.vmPowerOperatorRoleName
output MAINTENANCE_RUN_OPERATOR_ROLE_NAME string = roles.outputs.maintenanceRunOperatorRoleName
