// The Log Analytics workspace the VMs report their heartbeats to (the customer's, not the app's
// own telemetry workspace): Reader on that workspace only, so the app can query it after a run,
// and its customer id for the LOG_ANALYTICS_WORKSPACE_ID setting.
targetScope = 'resourceGroup'

@description('Name of the Log Analytics workspace, in this resource group.')
param workspaceName string

@description('Principal id of the Function App identity.')
param principalId string

// Built-in role: Reader (on a workspace it includes querying its logs; no keys, no writes).
var readerRole = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource access 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, principalId, readerRole)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', readerRole)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Update Manager events app: check the heartbeats of patched machines.'
  }
}

output customerId string = workspace.properties.customerId
