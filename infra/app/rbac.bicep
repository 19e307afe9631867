// Azure role assignments for the app identity and, optionally, the person or pipeline deploying.
// Each role is the narrowest built-in role that covers what the holder does.

@description('Name of the host storage account.')
param storageAccountName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('Name of the Key Vault that holds model API keys.')
param keyVaultName string

@description('Object (principal) ID of the app identity.')
param appPrincipalId string

@description('Object ID of the deployer, who may then store secrets in the Key Vault. Empty assigns nothing.')
param deployerPrincipalId string

@allowed([
  'User'
  'ServicePrincipal'
])
@description('Kind of principal that deployerPrincipalId names.')
param deployerPrincipalType string

@description('Let the deployer upload packages to host storage, which only the classic plan needs.')
param deployerUploadsPackages bool

// Built-in role definition IDs, the same in every Azure tenant.
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
}

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// The host keeps timer leases in blobs and reads the Flex deployment package. Storage Blob Data
// Owner is the role Microsoft's azd quickstarts for Functions grant for identity-based host storage.
resource appStorageBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storageAccount.id, appPrincipalId, roles.storageBlobDataOwner)
  scope: storageAccount
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
  }
}

// Entra-authenticated telemetry ingestion requires this role on the component.
resource appTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appPrincipalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// Read-only access to secret values, for Key Vault references in app settings.
resource appSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, appPrincipalId, roles.keyVaultSecretsUser)
  scope: keyVault
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

// Lets the deployer store the model API keys after `azd up`.
resource deployerSecrets 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(keyVault.id, deployerPrincipalId, roles.keyVaultSecretsOfficer)
  scope: keyVault
  properties: {
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
  }
}

// On the classic plan the deployer uploads the .zip package that WEBSITE_RUN_FROM_PACKAGE names.
resource deployerPackages 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (deployerUploadsPackages && !empty(deployerPrincipalId)) {
  name: guid(storageAccount.id, deployerPrincipalId, roles.storageBlobDataContributor)
  scope: storageAccount
  properties: {
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}
