// One maintenance configuration's Event Grid wiring, deployed into the configuration's resource
// group (as the Update Manager docs do): its system topic, and one event subscription per entry
// of eventSubscriptions (pre and post, from event-subscriptions.bicep).
targetScope = 'resourceGroup'

@description('Name of the maintenance configuration, in this resource group.')
param maintenanceConfigurationName string

@description('Resource id of the Function App (in the app resource group).')
param functionAppId string

@description('Resource id of the app storage account: event queue and dead-letter container.')
param storageAccountId string

@description('Queue the events go to when deliverToQueue is true.')
param eventQueueName string

@description('Blob container for undeliverable events.')
param deadLetterContainerName string

@description('Deliver to the Storage queue (read by on_maintenance_event_message) instead of the Event Grid trigger functions.')
param deliverToQueue bool

@description('Resource id of the user-assigned identity Event Grid delivers and dead-letters with.')
param eventGridIdentityId string

@description('Subscriptions to create: name, eventType, functionName, maxDeliveryAttempts, eventTimeToLiveInMinutes.')
param eventSubscriptions array

@description('Tags applied to the system topic.')
param tags object

resource configuration 'Microsoft.Maintenance/maintenanceConfigurations@2023-04-01' existing = {
  name: maintenanceConfigurationName
}

// Topic names allow letters, digits and hyphens only, so '_' and '.' become '-'; configurations
// whose names differ only there ('a_b', 'a-b', 'a.b') would then share a topic name. A short hash
// of the configuration's id keeps each name unique (3-128 characters).
var topicNameHash = take(uniqueString(configuration.id), 8)
var topicNameStem = take(replace(replace(maintenanceConfigurationName, '_', '-'), '.', '-'), 110)

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: '${topicNameStem}-${topicNameHash}-events'
  location: configuration.location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${eventGridIdentityId}': {}
    }
  }
  properties: {
    source: configuration.id
    topicType: 'Microsoft.Maintenance.MaintenanceConfigurations'
  }
}

var deliveryIdentity = {
  type: 'UserAssigned'
  userAssignedIdentity: eventGridIdentityId
}

// Storage accepts no shared keys, so queue delivery and dead-lettering both use the identity.
var queueDelivery = {
  deliveryWithResourceIdentity: {
    identity: deliveryIdentity
    destination: {
      endpointType: 'StorageQueue'
      properties: {
        resourceId: storageAccountId
        queueName: eventQueueName
      }
    }
  }
}

resource subscriptions 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = [for eventSubscription in eventSubscriptions: {
  parent: topic
  name: eventSubscription.name
  properties: union(deliverToQueue ? queueDelivery : {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/${eventSubscription.functionName}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
  }, {
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        eventSubscription.eventType
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: eventSubscription.maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventSubscription.eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: deliveryIdentity
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  })
}]

output systemTopicId string = topic.id
