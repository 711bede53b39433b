// Stage 2 of 2, after the code is published (an AzureFunction destination must name a function
// that exists): an Event Grid system topic on each maintenance configuration, with a pre and a
// post event subscription delivering to the app.
//
//   az deployment group create --resource-group <app rg> --template-file infra/event-subscriptions.bicep ...
//
// Deployed to the app's resource group (the names below are stage 1's outputs); each topic goes
// into its configuration's resource group and region through a module.
targetScope = 'resourceGroup'

@description('Resource ids of the maintenance configurations (the same list as stage 1).')
@minLength(1)
param maintenanceConfigurationIds array

@description('Function App name (stage 1 output AZURE_FUNCTION_APP_NAME).')
param functionAppName string

@description('App storage account name (stage 1 output AZURE_STORAGE_ACCOUNT_NAME).')
param storageAccountName string

@description('Name of the identity Event Grid delivers with (stage 1 output EVENT_GRID_IDENTITY_NAME).')
param eventGridIdentityName string

@description('Deliver events to the Storage queue maintenance-events (queue-triggered function on_maintenance_event_message) instead of the Event Grid trigger functions.')
param deliverToQueue bool = false

// A pre event is only useful before the run's cut-off (about T-10, VMs should be up by T-15) and
// arrives between T-40 and T-30, so it is retried briefly and then dead-lettered: with the Event
// Grid back-off (10 s, 30 s, 1 min, 5 min, 10 min) 5 attempts span under 7 minutes.
@description('Pre event: minutes Event Grid keeps retrying before dead-lettering.')
@minValue(1)
@maxValue(30)
param preEventTimeToLiveInMinutes int = 15

@description('Pre event: delivery attempts before dead-lettering.')
@minValue(1)
@maxValue(30)
param preEventMaxDeliveryAttempts int = 5

@description('Tags applied to the system topics.')
param tags object = {}

// Fixed names shared with stage 1 (tests/infra checks they agree).
var eventQueueName = 'maintenance-events'
var deadLetterContainerName = 'eventgrid-deadletter'

// The event type each function receives. The post event keeps Event Grid's defaults (30
// attempts over 24 hours): a late post event still lets the app deallocate what it started.
var eventSubscriptions = [
  {
    name: 'pre-maintenance'
    eventType: 'Microsoft.Maintenance.PreMaintenanceEvent'
    functionName: 'on_pre_maintenance_event'
    maxDeliveryAttempts: preEventMaxDeliveryAttempts
    eventTimeToLiveInMinutes: preEventTimeToLiveInMinutes
  }
  {
    name: 'post-maintenance'
    eventType: 'Microsoft.Maintenance.PostMaintenanceEvent'
    functionName: 'on_post_maintenance_event'
    maxDeliveryAttempts: 30
    eventTimeToLiveInMinutes: 1440
  }
]

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource eventGridIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' existing = {
  name: eventGridIdentityName
}

module topics 'modules/maintenance-event-topic.bicep' = [for configurationId in maintenanceConfigurationIds: {
  name: 'events-${uniqueString(resourceGroup().id, configurationId)}'
  scope: resourceGroup(split(configurationId, '/')[2], split(configurationId, '/')[4])
  params: {
    maintenanceConfigurationName: last(split(configurationId, '/'))
    functionAppId: functionApp.id
    storageAccountId: storage.id
    eventQueueName: eventQueueName
    deadLetterContainerName: deadLetterContainerName
    deliverToQueue: deliverToQueue
    eventGridIdentityId: eventGridIdentity.id
    eventSubscriptions: eventSubscriptions
    tags: tags
  }
}]

output systemTopicIds array = [for (configurationId, i) in maintenanceConfigurationIds: topics[i].outputs.systemTopicId]
