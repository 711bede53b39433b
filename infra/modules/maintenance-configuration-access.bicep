// Grants on one maintenance configuration (the resource itself, not its resource group):
// the maintenance run operator role (read runs, cancel a run) and Reader, so that Resource Graph
// returns the configuration's run records even when its subscription is not a target.
targetScope = 'resourceGroup'

@description('Name of the maintenance configuration, in this resource group.')
param maintenanceConfigurationName string

@description('Principal id of the Function App identity.')
param principalId string

@description('Name (GUID) of the maintenance run operator custom role.')
param maintenanceRunOperatorRoleName string

// Built-in role: Reader.
var readerRole = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'

var roles = [
  readerRole
  maintenanceRunOperatorRoleName
]

resource configuration 'Microsoft.Maintenance/maintenanceConfigurations@2023-04-01' existing = {
  name: maintenanceConfigurationName
}

resource access 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in roles: {
  name: guid(configuration.id, principalId, role)
  scope: configuration
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Update Manager events app: read this configuration\'s runs and cancel a run.'
  }
}]
