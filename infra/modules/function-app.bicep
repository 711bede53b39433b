// Flex Consumption plan and the Function App: Python 3.11, a user-assigned identity, the app
// package pulled from a blob container with that identity, HTTPS only, TLS 1.2, no FTP, no
// basic-auth publishing (deployments sign in with Entra ID).
targetScope = 'resourceGroup'

@description('Function App name (globally unique: it is the host name).')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Region of the plan and the app.')
param location string

@description('Tags applied to the plan and the app (the app also gets azd-service-name).')
param tags object

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Blob endpoint of the app storage account, with the trailing slash.')
param storageBlobEndpoint string

@description('Blob container holding the deployment package.')
param deploymentContainerName string

@description('App settings, name to value (built in main.bicep).')
param appSettings object

@description('Upper bound of instances the plan scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int

@description('Client id of the Microsoft Entra app registration whose tokens App Service authentication accepts for the operator API. Empty: authentication stays off.')
param authenticationClientId string

@description('Tenant whose Microsoft Entra tokens are accepted.')
param authenticationTenantId string

@description('Memory of each instance.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy is offered in some regions only; an outage delays events, which Event Grid retries, and the run ledger is in ZRS storage.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Event Grid delivers to the Event Grid trigger functions over the public endpoint; callers authenticate with the Event Grid system key or function keys.
  // checkov:skip=CKV_AZURE_17: Event Grid cannot present a client certificate; the HTTP API authenticates with function keys.
  // checkov:skip=CKV_AZURE_212: Flex Consumption has no fixed instance count: the platform scales instances (0 to maximumInstanceCount) and replaces failed ones.
  // checkov:skip=CKV_AZURE_213: App Service health check does not apply to Flex Consumption; failures are watched in Application Insights.
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    // Event Grid delivers to the functions over the public endpoint; the HTTP API uses function keys.
    publicNetworkAccess: 'Enabled'
    // Key Vault references in app settings resolve with the app's own identity.
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [for setting in items(appSettings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
    }
  }
}

// App Service authentication (Microsoft Entra ID) in front of the operator API, only when a client
// id is given (app-authentication.bicep says what it does). A module rather than a conditional
// resource, so that checkov's parser reads the settings themselves.
module authentication 'app-authentication.bicep' = if (!empty(authenticationClientId)) {
  name: '${name}-authentication'
  params: {
    siteName: site.name
    clientId: authenticationClientId
    tenantId: authenticationTenantId
  }
}

// No FTP and no basic-auth (publishing profile) deployments: `func azure functionapp publish`
// and `azd deploy` authenticate with the signed-in Entra ID account.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
