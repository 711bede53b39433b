// App Service authentication (authsettingsV2) of the Function App, deployed by function-app.bicep
// only when an Entra app registration's client id is given.
targetScope = 'resourceGroup'

@description('Name of the Function App.')
param siteName string

@description('Client id of the Microsoft Entra app registration whose tokens are accepted (audience api://<client id>).')
param clientId string

@description('Tenant whose Microsoft Entra tokens are accepted.')
param tenantId string

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: siteName
}

// App Service authentication (Microsoft Entra ID) in front of the operator API: it validates the
// caller's bearer token, strips any x-ms-client-principal* header a client sent and sets its own,
// and the app sees WEBSITE_AUTH_ENABLED=True. Only then does the app believe those headers
// (CANCEL_ALLOWED_CALLERS). Function keys are still required on every HTTP function.
// The Event Grid webhook is excluded: Event Grid presents the extension's system key, never an
// Entra token. Queue delivery and the task queue are not HTTP, so authentication never sees them.
resource authentication 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: checkov knows only the V1 authsettings shape (properties.enabled); this is authsettingsV2, on through platform.enabled (tests/infra checks it).
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
          clientId: clientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${clientId}'
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
