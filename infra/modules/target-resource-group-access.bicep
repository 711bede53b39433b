// Grants on one target resource group, for when a whole subscription is too broad: Reader
// (Resource Graph only returns what the caller may read) and the app's VM power operator role.
targetScope = 'resourceGroup'

@description('Principal id of the Function App identity.')
param principalId string

@description('Name (GUID) of the VM power operator custom role.')
param vmPowerOperatorRoleName string

// Built-in role: Reader.
var readerRole = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'

var roles = [
  readerRole
  vmPowerOperatorRoleName
]

resource access 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in roles: {
  name: guid(resourceGroup().id, principalId, role)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'Update Manager events app: find the machines of a run, start and deallocate them.'
  }
}]
