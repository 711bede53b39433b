// The two custom roles of the app, each holding only the actions the app calls:
//   VM power operator        on the target subscriptions / resource groups
//   maintenance run operator on each maintenance configuration (read runs, cancel a run)
// They are separate so that applyUpdates/write (which could also start an on-demand patch run)
// is never granted on the machines' scopes, and VM start/deallocate never on a configuration's.
targetScope = 'subscription'

@description('Function App name: globally unique, so it makes the role names unique in the tenant.')
param instanceName string

@description('Resource id of the resource group the app is deployed to (keys the role GUIDs).')
param deploymentResourceGroupId string

@description('Scopes the VM power operator role can be assigned at (subscription and resource group ids).')
param vmAssignableScopes array

@description('Scopes the maintenance run operator role can be assigned at (resource groups of the configurations).')
param maintenanceAssignableScopes array

@description('Add the actions needed to snapshot OS and data disks before patching.')
param enableSnapshots bool

// Start and deallocate are sent and their first answer taken: nothing polls Compute's operation
// status, so no operations read is granted. Power states are read with virtualMachines/read (a
// VM with its instance view, or the subscription's status-only list of VMs).
var vmPowerActions = [
  'Microsoft.Compute/virtualMachines/read'
  'Microsoft.Compute/virtualMachines/instanceView/read'
  'Microsoft.Compute/virtualMachines/start/action'
  'Microsoft.Compute/virtualMachines/deallocate/action'
]

// A snapshot is a disk resource: its creation is polled through .../locations/{region}/
// diskOperations/{id}, the disk operation status read.
var snapshotActions = [
  'Microsoft.Compute/disks/read'
  'Microsoft.Compute/snapshots/read'
  'Microsoft.Compute/snapshots/write'
  'Microsoft.Compute/locations/diskOperations/read'
]

var maintenanceRunActions = [
  'Microsoft.Maintenance/maintenanceConfigurations/read'
  'Microsoft.Maintenance/applyUpdates/read'
  'Microsoft.Maintenance/applyUpdates/write'
]

// ARM creates a role definition at a subscription that must be one of its assignable scopes.
// An assignable scope grants nothing: it only says where the role may later be assigned.
var ownSubscription = [
  subscription().id
]

resource vmPowerOperator 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, deploymentResourceGroupId, instanceName, 'vm-power-operator')
  properties: {
    roleName: 'Update Manager events VM power operator (${instanceName})'
    description: 'Start and deallocate the VMs of an Update Manager run; read their power state.'
    type: 'CustomRole'
    permissions: [
      {
        actions: concat(vmPowerActions, enableSnapshots ? snapshotActions : [])
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: union(ownSubscription, vmAssignableScopes)
  }
}

resource maintenanceRunOperator 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, deploymentResourceGroupId, instanceName, 'maintenance-run-operator')
  properties: {
    roleName: 'Update Manager events maintenance run operator (${instanceName})'
    description: 'Read a maintenance configuration and its runs; cancel a run.'
    type: 'CustomRole'
    permissions: [
      {
        actions: maintenanceRunActions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: union(ownSubscription, maintenanceAssignableScopes)
  }
}

// Names (GUIDs), not ids: an assignment in another subscription must reference the role
// through that subscription (subscriptionResourceId in the assignment modules).
output vmPowerOperatorRoleName string = vmPowerOperator.name
output maintenanceRunOperatorRoleName string = maintenanceRunOperator.name
