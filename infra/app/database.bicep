// PostgreSQL flexible server with Microsoft Entra authentication only, the application database,
// its firewall rules, TLS settings, optional PgBouncer and the Entra administrators.
//
// The server's child resources are chained with dependsOn because the service applies one
// change to a server at a time and rejects concurrent ones.

@description('Name of the PostgreSQL flexible server, which is also the first label of its host name.')
param serverName string

@description('Azure region of the server.')
param location string

@description('Tags for the server.')
param tags object

@description('Compute size, for example Standard_B2s (Burstable) or Standard_D2ds_v5 (General Purpose).')
param skuName string

@minValue(32)
@description('Storage size in GiB.')
param storageSizeGB int

@description('Name of the application database.')
param databaseName string

@allowed([
  'AllowAzureServices'
  'Disabled'
])
@description('AllowAzureServices: public endpoint limited to Azure-hosted addresses. Disabled: no public endpoint.')
param networkAccess string

@description('One IPv4 address to allow through the firewall for administration. Empty adds no rule.')
param clientIpAddress string

@description('Turn on the built-in PgBouncer on port 6432, which only General Purpose and Memory Optimized sizes offer.')
param usePgBouncer bool

@description('Make the app identity a Microsoft Entra administrator of the server.')
param appIdentityIsAdmin bool

@description('Name of the app identity, which becomes its PostgreSQL role name.')
param appIdentityName string

@description('Object (principal) ID of the app identity.')
param appIdentityPrincipalId string

@description('Object ID of an extra Microsoft Entra administrator (user or group). Empty adds none.')
param adminObjectId string

@description('Display name of the extra administrator: a user principal name or a group name.')
param adminPrincipalName string

@allowed([
  'User'
  'Group'
])
@description('Kind of principal that adminObjectId names.')
param adminPrincipalType string

var tier = startsWith(skuName, 'Standard_B') ? 'Burstable' : 'GeneralPurpose'
var publicAccess = networkAccess == 'AllowAzureServices'

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: serverName
  location: location
  tags: tags
  sku: {
    name: skuName
    tier: tier
  }
  properties: {
    version: '16'
    storage: {
      storageSizeGB: storageSizeGB
      autoGrow: 'Enabled'
    }
    backup: {
      backupRetentionDays: 7
      // Geo-redundant backup roughly doubles backup storage cost. Turn it on for production data
      // that must survive the loss of a region.
      geoRedundantBackup: 'Disabled'
    }
    highAvailability: {
      mode: 'Disabled'
    }
    authConfig: {
      // Sign-in with Microsoft Entra tokens only: there is no password to leak or rotate.
      activeDirectoryAuth: 'Enabled'
      passwordAuth: 'Disabled'
      tenantId: tenant().tenantId
    }
    network: {
      publicNetworkAccess: publicAccess ? 'Enabled' : 'Disabled'
    }
  }
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: server
  name: databaseName
  properties: {
    charset: 'UTF8'
    collation: 'en_US.utf8'
  }
}

// 0.0.0.0 to 0.0.0.0 is Azure's notation for "connections from Azure-hosted addresses". That
// includes other customers' resources, so the firewall only narrows who can connect. Entra-only
// authentication is what keeps them out. Without a virtual network the function app has no
// fixed addresses to list instead.
resource allowAzureServices 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = if (publicAccess) {
  parent: server
  name: 'AllowAllAzureServicesAndResourcesWithinAzureIps'
  properties: {
    startIpAddress: '0.0.0.0'
    endIpAddress: '0.0.0.0'
  }
  dependsOn: [
    database
  ]
}

resource allowClient 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = if (publicAccess && !empty(clientIpAddress)) {
  parent: server
  name: 'AllowAdministratorClient'
  properties: {
    startIpAddress: clientIpAddress
    endIpAddress: clientIpAddress
  }
  dependsOn: [
    allowAzureServices
  ]
}

// Reject unencrypted connections. The app connects with sslmode=require.
resource requireSecureTransport 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: server
  name: 'require_secure_transport'
  properties: {
    value: 'on'
    source: 'user-override'
  }
  dependsOn: [
    allowClient
  ]
}

// TLS 1.0 and 1.1 have known weaknesses, and libpq and psycopg support 1.2.
resource minimumTlsVersion 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: server
  name: 'ssl_min_protocol_version'
  properties: {
    value: 'TLSv1.2'
    source: 'user-override'
  }
  dependsOn: [
    requireSecureTransport
  ]
}

// PgBouncer pools in transaction mode by default, so the app turns prepared statements off.
resource pgBouncer 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = if (usePgBouncer) {
  parent: server
  name: 'pgbouncer.enabled'
  properties: {
    value: 'true'
    source: 'user-override'
  }
  dependsOn: [
    minimumTlsVersion
  ]
}

// An Entra administrator may create roles and owns what it creates, so the app can apply its
// own migrations. For least privilege, set appIdentityIsAdmin to false and grant a role by hand.
resource appAdministrator 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = if (appIdentityIsAdmin) {
  parent: server
  name: appIdentityPrincipalId
  properties: {
    principalType: 'ServicePrincipal'
    principalName: appIdentityName
    tenantId: tenant().tenantId
  }
  dependsOn: [
    minimumTlsVersion
    pgBouncer
  ]
}

resource extraAdministrator 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = if (!empty(adminObjectId)) {
  parent: server
  name: adminObjectId
  properties: {
    principalType: adminPrincipalType
    principalName: adminPrincipalName
    tenantId: tenant().tenantId
  }
  dependsOn: [
    appAdministrator
  ]
}

output serverName string = server.name
output fullyQualifiedDomainName string = server.properties.fullyQualifiedDomainName
