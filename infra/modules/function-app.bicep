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

// App Service authentication (Microsoft Entra ID) in front of the operator API: it validates the
// caller's bearer token, strips any x-ms-client-principal* header a client sent and sets its own,
// and the app sees WEBSITE_AUTH_ENABLED=True. Only then does the app believe those headers
// (CANCEL_ALLOWED_CALLERS). Function keys are still required on every HTTP function.
// The Event Grid webhook is excluded: Event Grid presents the extension's system key, never an
// Entra token. Queue delivery and the task queue are not HTTP, so authentication never sees them.
resource authentication 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(authenticationClientId)) {
  // checkov:skip=CKV_AZURE_13: checkov knows only the V1 authsettings shape (properties.enabled); this is authsettingsV2, on through platform.enabled (tests/infra checks it).
  // checkov:skip=CKV_AZURE_70: checkov cannot read a conditional sites/config (it fails with KeyError); httpSettings.requireHttps is true here and httpsOnly is set on the site.
  // checkov:skip=CKV_AZURE_63: a check of the 'web' config (HTTP logging) that checkov applies to every sites/config; this one holds authentication only.
  // checkov:skip=CKV_AZURE_65: a check of the 'web' config (detailed errors) that checkov applies to every sites/config; this one holds authentication only.
  // checkov:skip=CKV_AZURE_66: a check of the 'web' config (failed request tracing) that checkov applies to every sites/config; this one holds authentication only.
  // checkov:skip=CKV_AZURE_80: a check of the 'web' config (.NET version) that checkov applies to every sites/config; the app is Python.
  // checkov:skip=CKV_AZURE_88: a check of the 'web' config (Azure Files) that checkov applies to every sites/config; Flex Consumption has no Azure Files mount.
  // checkov:skip=CKV_AZURE_222: public network access is a property of the site (skipped there with the reason); this resource holds authentication only.
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [
        '/runtime/webhooks/eventgrid'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authenticationClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${authenticationTenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${authenticationClientId}'
          ]
        }
      }
    }
    login: {
      // An API: callers bring their own token; nothing to store.
      tokenStore: {
        enabled: false
      }
    }
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
