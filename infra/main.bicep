// Provisions the function app and everything it needs: a resource group, a user-assigned identity,
// host storage, monitoring, a Key Vault for model API keys and a PostgreSQL flexible server.
// `azd up` deploys this file with main.parameters.json, then deploys the code as service 'api'.
targetScope = 'subscription'

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the azd environment. It names the resource group and seeds the resource token.')
param environmentName string

@minLength(1)
@description('Azure region for every resource. Flex Consumption is offered in a subset of regions.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object ID of the person or pipeline running the deployment (azd fills it in). It may store model API keys in the Key Vault and, on the classic plan, upload packages. Empty grants nothing.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
@description('Kind of principal that principalId names.')
param principalType string = 'User'

// ---------------------------------------------------------------------------------------------
// Hosting and capacity
// ---------------------------------------------------------------------------------------------

@allowed([
  'flex'
  'classic'
])
@description('flex: Flex Consumption plan (FC1), the default. classic: Linux Consumption plan (Y1), which Microsoft retires on 30 September 2028. Its limits are listed in app/function.bicep.')
param hostingPlan string = 'flex'

@minValue(1)
@maxValue(1000)
@description('Maximum number of instances the app may scale out to. The template lowers it when the database connection budget cannot give every worker at least one connection, and the classic plan caps it at 100.')
param maximumInstanceCount int = 20

@allowed([
  512
  2048
  4096
])
@description('Memory of each Flex Consumption instance in MB. The classic plan ignores it (1.5 GB, fixed).')
param instanceMemoryMB int = 2048

@minValue(1)
@maxValue(10)
@description('Python worker processes per instance on the classic plan (FUNCTIONS_WORKER_PROCESS_COUNT). Flex Consumption always runs one worker per instance.')
param classicWorkerProcessCount int = 1

@description('Classic plan only: URL of the .zip package uploaded to host storage (WEBSITE_RUN_FROM_PACKAGE), as docs/deploy.md describes. Flex Consumption ignores it.')
param classicPackageUrl string = ''

// ---------------------------------------------------------------------------------------------
// Database
// ---------------------------------------------------------------------------------------------

@allowed([
  'Standard_B1ms'
  'Standard_B2s'
  'Standard_B2ms'
  'Standard_B4ms'
  'Standard_D2ds_v5'
  'Standard_D4ds_v5'
  'Standard_D8ds_v5'
])
@description('Compute size of the PostgreSQL server. Standard_B* sizes are Burstable, which cannot run PgBouncer. Standard_D* sizes are General Purpose. Each size has a default max_connections (see databaseMaxConnectionsBySku).')
param databaseSkuName string = 'Standard_B2s'

@minValue(32)
@maxValue(16384)
@description('Storage of the PostgreSQL server in GiB.')
param databaseStorageSizeGB int = 32

@minLength(1)
@maxLength(63)
@description('Name of the application database on the server.')
param databaseName string = 'app'

@allowed([
  'AllowAzureServices'
  'Disabled'
])
@description('AllowAzureServices: public endpoint with a firewall rule that admits connections from Azure-hosted addresses only (any tenant), so the app reaches it without a virtual network. Disabled: no public endpoint, so the app needs private networking, which this template does not create.')
param databaseNetworkAccess string = 'AllowAzureServices'

@description('One IPv4 address allowed through the PostgreSQL firewall, for running psql or the migration command from a workstation. Empty adds no rule.')
param databaseClientIpAddress string = ''

@description('Make the app identity a Microsoft Entra administrator of the server, so `azd up` needs no manual SQL. Set false to grant it a least-privilege role yourself (docs/deploy.md).')
param databaseAppIdentityIsAdmin bool = true

@description('Object ID of a Microsoft Entra user or group to add as a server administrator, for people who run psql or grant roles. Empty adds none.')
param databaseAdminObjectId string = ''

@description('Display name of databaseAdminObjectId: the user principal name of a user or the name of a group. It becomes the PostgreSQL role name.')
param databaseAdminPrincipalName string = ''

@allowed([
  'User'
  'Group'
])
@description('Kind of principal that databaseAdminObjectId names.')
param databaseAdminPrincipalType string = 'Group'

@description('Route the app through the server\'s built-in PgBouncer (transaction pooling, port 6432). It needs a General Purpose size and turns prepared statements off in the app.')
param databaseUsePgBouncer bool = false

@minValue(1)
@maxValue(200)
@description('Largest connection pool one worker may open (DATABASE_POOL_MAX_SIZE). The template lowers it when maximumInstanceCount × workers × pool would exceed the connection budget.')
param databasePoolMaxSize int = 5

@minValue(0)
@maxValue(500)
@description('Connections kept free for people and tools (psql, the migration command, maintenance) when sizing the app\'s pools.')
param databaseReservedConnections int = 10

// ---------------------------------------------------------------------------------------------
// Application: authentication and model
// ---------------------------------------------------------------------------------------------

@description('Directory (tenant) ID of the API\'s app registration (AUTH_TENANT_ID). Empty means the tenant of the deployment.')
param authTenantId string = ''

@minLength(36)
@maxLength(36)
@description('Application (client) ID of the API\'s app registration (AUTH_CLIENT_ID). Create the registration first: docs/deploy.md, "Register the API in Microsoft Entra ID".')
param authClientId string

@description('Application ID URI of the API (AUTH_APP_ID_URI). Empty means api://<authClientId>.')
param authAppIdUri string = ''

@description('Comma-separated tenant IDs whose tokens are accepted (AUTH_ALLOWED_TENANTS). Empty accepts authTenantId only.')
param authAllowedTenants string = ''

@allowed([
  'offline'
  'openai'
  'azure_openai'
])
@description('Model provider (MODEL_PROVIDER). offline answers without a model and needs no key, which suits a first deployment.')
param modelProvider string = 'offline'

@description('Base URL of an OpenAI-compatible API (OPENAI_BASE_URL), used when modelProvider is openai.')
param openAiBaseUrl string = 'https://api.openai.com/v1'

@description('Model name for the openai provider (OPENAI_MODEL).')
param openAiModel string = ''

@description('Endpoint of the Azure OpenAI resource (AZURE_OPENAI_ENDPOINT), used when modelProvider is azure_openai.')
param azureOpenAiEndpoint string = ''

@description('Deployment name in the Azure OpenAI resource (AZURE_OPENAI_DEPLOYMENT).')
param azureOpenAiDeployment string = ''

@description('Azure OpenAI API version (AZURE_OPENAI_API_VERSION).')
param azureOpenAiApiVersion string = '2024-10-21'

@description('Prices per model in US dollars per million tokens, as JSON (MODEL_PRICES), for example {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}. Empty records usage without cost.')
param modelPrices string = ''

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var identityName = '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
var functionAppName = '${abbrs.webSitesFunctions}api-${resourceToken}'
var keyVaultName = '${abbrs.keyVaultVaults}${resourceToken}'
// Flex Consumption reads the deployed package from this blob container.
var deploymentContainerName = 'app-package-${take(resourceToken, 7)}'

// ---------------------------------------------------------------------------------------------
// Connection budget
//
// Every worker opens its own pool, so at peak the app holds
//   maximum instances × workers per instance × DATABASE_POOL_MAX_SIZE
// connections. Without PgBouncer they count against the server's max_connections, less the 15
// that Azure reserves for replication and monitoring, less databaseReservedConnections. With
// PgBouncer they count against PgBouncer's client limit (pgbouncer.max_client_conn, 5000 by
// default), and PgBouncer opens at most pgbouncer.default_pool_size (50 by default) server
// connections for the app's one user and database, which every General Purpose size can hold
// next to databaseReservedConnections.
// ---------------------------------------------------------------------------------------------

// Default max_connections of each size, from "Limits in Azure Database for PostgreSQL flexible
// server" (Microsoft Learn). They hold only while max_connections keeps its default.
var databaseMaxConnectionsBySku = {
  Standard_B1ms: 50
  Standard_B2s: 429
  Standard_B2ms: 859
  Standard_B4ms: 1718
  Standard_D2ds_v5: 859
  Standard_D4ds_v5: 1718
  Standard_D8ds_v5: 3437
}
var azureReservedConnections = 15
var pgBouncerMaxClientConnections = 5000
var isFlex = hostingPlan == 'flex'
var workersPerInstance = isFlex ? 1 : classicWorkerProcessCount
var serverConnectionBudget = databaseMaxConnectionsBySku[databaseSkuName] - azureReservedConnections - databaseReservedConnections
var pgBouncerConnectionBudget = pgBouncerMaxClientConnections
var connectionBudget = databaseUsePgBouncer ? pgBouncerConnectionBudget : serverConnectionBudget
// Linux Consumption scales a single app to at most 100 instances.
var planInstanceLimit = isFlex ? 1000 : 100
var effectiveMaximumInstanceCount = max(1, min(maximumInstanceCount, planInstanceLimit, connectionBudget / workersPerInstance))
var effectivePoolMaxSize = max(1, min(databasePoolMaxSize, connectionBudget / (effectiveMaximumInstanceCount * workersPerInstance)))
var peakAppConnections = effectiveMaximumInstanceCount * workersPerInstance * effectivePoolMaxSize

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

// The app's only identity: it reads host storage, writes telemetry, reads Key Vault secrets and
// signs in to PostgreSQL. AZURE_CLIENT_ID tells azure-identity which identity to use.
module identity 'br/public:avm/res/managed-identity/user-assigned-identity:0.4.1' = {
  name: 'identity'
  scope: rg
  params: {
    name: identityName
    location: location
    tags: tags
  }
}

module logAnalytics 'br/public:avm/res/operational-insights/workspace:0.11.1' = {
  name: 'log-analytics'
  scope: rg
  params: {
    name: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    location: location
    tags: tags
    dataRetention: 30
  }
}

module applicationInsights 'br/public:avm/res/insights/component:0.6.0' = {
  name: 'application-insights'
  scope: rg
  params: {
    name: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    workspaceResourceId: logAnalytics.outputs.resourceId
    // Accept telemetry only with a Microsoft Entra token, so the connection string alone
    // (which is not a secret) cannot be used to write fake telemetry.
    disableLocalAuth: true
  }
}

module storage 'br/public:avm/res/storage/storage-account:0.8.3' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    skuName: 'Standard_LRS'
    // The host reaches storage with its managed identity, so account keys are never needed and
    // a leaked key or SAS token cannot exist.
    allowSharedKeyAccess: false
    // Host storage contains leases and deployment packages, and nothing in it is meant to be public.
    allowBlobPublicAccess: false
    // Older TLS versions have known weaknesses, and every Azure client supports 1.2.
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    // The app has no virtual network, so the endpoint stays public. Identity-based access
    // without keys is what keeps it closed.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    blobServices: {
      containers: [
        {
          name: deploymentContainerName
          publicAccess: 'None'
        }
      ]
    }
  }
}

module keyVault 'br/public:avm/res/key-vault/vault:0.14.0' = {
  name: 'key-vault'
  scope: rg
  params: {
    name: keyVaultName
    location: location
    tags: tags
    sku: 'standard'
    // Access is granted by Azure roles (app/rbac.bicep), not by vault access policies.
    enableRbacAuthorization: true
    // Soft delete keeps a deleted secret for 7 days. Purge protection stays off because the vault
    // holds only re-issuable third-party API keys, and purge protection would stop
    // `azd down --purge` from freeing the vault name for the same environment.
    softDeleteRetentionInDays: 7
    enablePurgeProtection: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

module database 'app/database.bicep' = {
  name: 'database'
  scope: rg
  params: {
    serverName: '${abbrs.dBforPostgreSQLServers}${resourceToken}'
    location: location
    tags: tags
    skuName: databaseSkuName
    storageSizeGB: databaseStorageSizeGB
    databaseName: databaseName
    networkAccess: databaseNetworkAccess
    clientIpAddress: databaseClientIpAddress
    usePgBouncer: databaseUsePgBouncer
    appIdentityIsAdmin: databaseAppIdentityIsAdmin
    appIdentityName: identity.outputs.name
    appIdentityPrincipalId: identity.outputs.principalId
    adminObjectId: databaseAdminObjectId
    adminPrincipalName: databaseAdminPrincipalName
    adminPrincipalType: databaseAdminPrincipalType
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: applicationInsights.outputs.name
    keyVaultName: keyVault.outputs.name
    appPrincipalId: identity.outputs.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
    deployerUploadsPackages: !isFlex
  }
}

// Key Vault references for the model API keys. The secrets are stored after deployment
// (docs/deploy.md), and the references resolve with the app identity.
var openAiApiKeyReference = '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=openai-api-key)'
var azureOpenAiApiKeyReference = '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=azure-openai-api-key)'
var databasePort = databaseUsePgBouncer ? 6432 : 5432
var effectiveAuthTenantId = empty(authTenantId) ? tenant().tenantId : authTenantId

// Every setting the app reads (shared/settings.py), except the development-only ones listed in
// tests/test_settings_catalog.py. Values are strings because app settings are environment variables.
var applicationSettings = {
  // The user name is the identity's name, which is also its PostgreSQL role. There is no password:
  // with DATABASE_AUTH=entra the app asks azure-identity for a token for each new connection.
  DATABASE_URL: 'postgresql://${identity.outputs.name}@${database.outputs.fullyQualifiedDomainName}:${databasePort}/${databaseName}?sslmode=require'
  DATABASE_AUTH: 'entra'
  DATABASE_POOL_MAX_SIZE: string(effectivePoolMaxSize)
  DATABASE_POOL_TIMEOUT_SECONDS: '5'
  DATABASE_STATEMENT_TIMEOUT_MS: '15000'
  // Entra access tokens live about 60 to 90 minutes and a connection keeps the token it opened
  // with, so connections are retired well before then.
  DATABASE_CONNECTION_MAX_LIFETIME_SECONDS: '1800'
  // PgBouncer in transaction mode may run each statement on another server connection, where a
  // statement prepared earlier does not exist.
  DATABASE_PREPARED_STATEMENTS: databaseUsePgBouncer ? 'false' : 'true'
  MODEL_PROVIDER: modelProvider
  OPENAI_BASE_URL: openAiBaseUrl
  OPENAI_API_KEY: modelProvider == 'openai' ? openAiApiKeyReference : ''
  OPENAI_MODEL: openAiModel
  AZURE_OPENAI_ENDPOINT: azureOpenAiEndpoint
  AZURE_OPENAI_DEPLOYMENT: azureOpenAiDeployment
  AZURE_OPENAI_API_VERSION: azureOpenAiApiVersion
  AZURE_OPENAI_API_KEY: modelProvider == 'azure_openai' ? azureOpenAiApiKeyReference : ''
  MODEL_TIMEOUT_SECONDS: '60'
  MODEL_PRICES: modelPrices
  // Azure's front end ends any HTTP request after 230 seconds whatever functionTimeout says, so a
  // run must finish before then. A live run renews its lease every third of RUN_LEASE_SECONDS, so
  // the lease only bounds how long a dead worker's conversation stays locked.
  RUN_TIMEOUT_SECONDS: '200'
  RUN_LEASE_SECONDS: '30'
  AUTH_TENANT_ID: effectiveAuthTenantId
  AUTH_CLIENT_ID: authClientId
  AUTH_APP_ID_URI: empty(authAppIdUri) ? 'api://${authClientId}' : authAppIdUri
  AUTH_ALLOWED_TENANTS: authAllowedTenants
  // Only v2.0 tokens, because the app registration sets the access token version to 2.
  AUTH_ACCEPT_V1_TOKENS: 'false'
  AUTH_LEEWAY_SECONDS: '60'
  AUTH_CONVERSATION_SCOPE: 'Conversations.ReadWrite'
  AUTH_CONVERSATION_ROLE: 'Conversations.ReadWrite.All'
  AUTH_ANALYTICS_ROLE: 'Analytics.Read'
  // Signing keys come from Microsoft Entra ID. The local key file is for development only.
  AUTH_KEY_SOURCE: 'entra'
  // Built from the cloud's own sign-in endpoint, so sovereign clouds get the right issuer.
  AUTH_OPENID_CONFIG_URL: '${environment().authentication.loginEndpoint}${effectiveAuthTenantId}/v2.0/.well-known/openid-configuration'
  AUTH_JWKS_CACHE_SECONDS: '86400'
  AUTH_JWKS_REFRESH_COOLDOWN_SECONDS: '300'
  MAX_REQUEST_BYTES: '65536'
  MAX_MESSAGE_CHARS: '16000'
  ANALYTICS_WRITE_TIMEOUT_MS: '2000'
  ANALYTICS_DAILY_RETENTION_DAYS: '90'
  ANALYTICS_MONTHLY_RETENTION_MONTHS: '36'
  THREAD_COMPACT_AFTER_DAYS: '7'
  THREAD_DELETE_AFTER_DAYS: '90'
  // NCRONTAB with seconds, in UTC: every night at 02:30.
  ROLLUP_SCHEDULE: '0 30 2 * * *'
}

module api 'app/function.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    serviceName: 'api'
    hostingPlan: hostingPlan
    maximumInstanceCount: effectiveMaximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    workerProcessCount: workersPerInstance
    identityResourceId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: applicationInsights.outputs.name
    appSettings: applicationSettings
    classicPackageUrl: classicPackageUrl
  }
  // The identity must hold its storage and monitoring roles before the host starts using them.
  dependsOn: [
    rbac
  ]
}

// ---------------------------------------------------------------------------------------------
// Outputs: azd stores them in the environment (.azure/<env>/.env).
// ---------------------------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = api.outputs.uri
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_MANAGED_IDENTITY_NAME string = identity.outputs.name
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output DATABASE_SERVER_NAME string = database.outputs.serverName
output DATABASE_HOST string = database.outputs.fullyQualifiedDomainName
output DATABASE_NAME string = databaseName
output DATABASE_PORT int = databasePort
output CAPACITY_MAXIMUM_INSTANCE_COUNT int = effectiveMaximumInstanceCount
output CAPACITY_WORKERS_PER_INSTANCE int = workersPerInstance
output CAPACITY_POOL_MAX_SIZE int = effectivePoolMaxSize
output CAPACITY_PEAK_APP_CONNECTIONS int = peakAppConnections
output CAPACITY_CONNECTION_BUDGET int = connectionBudget
