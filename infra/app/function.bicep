// Hosting plan and function app, on Flex Consumption (default) or the classic Linux Consumption plan.
//
// Limits of the classic Linux Consumption plan (Y1), which Microsoft retires on 30 September 2028
// and which gets no new language versions:
//   - functionTimeout in host.json: 5 minutes by default, 10 minutes at most.
//   - 1.5 GB of memory per instance, one instance size.
//   - At most 100 instances per app on Linux (200 on Windows).
//   - No virtual network integration, so the database must keep a public endpoint.
//   - Code runs from a package URL (WEBSITE_RUN_FROM_PACKAGE), as docs/deploy.md describes.
// On both plans an HTTP request ends after 230 seconds, whatever functionTimeout says.

@description('Name of the function app.')
param name string

@description('Name of the hosting plan.')
param planName string

@description('Azure region of the plan and the app.')
param location string

@description('Tags for both resources. The app also gets azd-service-name.')
param tags object

@description('Service name in azure.yaml, which azd uses to find the app to deploy to.')
param serviceName string

@allowed([
  'flex'
  'classic'
])
@description('flex: Flex Consumption (FC1). classic: Linux Consumption (Y1).')
param hostingPlan string

@minValue(1)
@maxValue(1000)
@description('Maximum number of instances, already fitted to the database connection budget by main.bicep.')
param maximumInstanceCount int

@description('Memory of each Flex Consumption instance in MB.')
param instanceMemoryMB int

@minValue(1)
@maxValue(10)
@description('Python worker processes per instance, used on the classic plan only, because Flex always runs one.')
param workerProcessCount int

@description('Resource ID of the user-assigned identity the app runs as.')
param identityResourceId string

@description('Client ID of that identity, for azure-identity and for identity-based host storage.')
param identityClientId string

@description('Name of the host storage account.')
param storageAccountName string

@description('Blob container that holds the deployed package on Flex Consumption.')
param deploymentContainerName string

@description('Name of the Application Insights component that receives telemetry.')
param applicationInsightsName string

@description('Application settings of the app itself. This module adds the platform settings.')
param appSettings object

@description('Classic plan only: URL of the deployed .zip package in host storage (WEBSITE_RUN_FROM_PACKAGE). Empty leaves the setting out.')
param classicPackageUrl string = ''

var isFlex = hostingPlan == 'flex'

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: the classic Consumption plan cannot be zone redundant, and Flex Consumption zone redundancy is left off so one template serves both plans
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: isFlex ? {
    name: 'FC1'
    tier: 'FlexConsumption'
  } : {
    name: 'Y1'
    tier: 'Dynamic'
  }
  properties: {
    // Linux plan.
    reserved: true
  }
}

// Both plans: where the host keeps its leases and how it signs in to storage and telemetry.
var platformSettings = {
  // The host reaches storage with the user-assigned identity, because the account accepts no keys.
  AzureWebJobsStorage__accountName: storageAccount.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  // Sign telemetry with the identity, because the component rejects unauthenticated ingestion.
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // DefaultAzureCredential and ManagedIdentityCredential pick the user-assigned identity by this ID.
  AZURE_CLIENT_ID: identityClientId
}

// Classic plan only: Flex Consumption sets runtime and version in functionAppConfig and rejects
// these settings.
var classicSettings = {
  FUNCTIONS_EXTENSION_VERSION: '~4'
  FUNCTIONS_WORKER_RUNTIME: 'python'
  FUNCTIONS_WORKER_PROCESS_COUNT: string(workerProcessCount)
  // The platform downloads the package named by WEBSITE_RUN_FROM_PACKAGE with this identity, so
  // the package URL needs no SAS token.
  WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID: identityResourceId
}
// Kept in the template because each provisioning replaces all app settings, which would otherwise
// drop a package URL set by hand.
var classicPackageSettings = empty(classicPackageUrl) ? {} : {
  WEBSITE_RUN_FROM_PACKAGE: classicPackageUrl
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: the API is called from the internet, and its conversation and analytics routes check a Microsoft Entra token
  // checkov:skip=CKV_AZURE_17: callers authenticate with Entra bearer tokens, not client certificates
  // checkov:skip=CKV_AZURE_212: consumption plans scale from zero and have no fixed instance count to set
  // checkov:skip=CKV_AZURE_213: health check pings would keep scale-to-zero instances running and billed, so failures are watched in Application Insights
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityResourceId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    // Plain HTTP would expose bearer tokens on the wire.
    httpsOnly: true
    // Key Vault references resolve with the user-assigned identity, because there is no system identity.
    keyVaultReferenceIdentity: identityResourceId
    // Callers reach the API over the internet. Every conversation and analytics route checks a
    // Microsoft Entra token, so the endpoint itself stays public.
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      // Older TLS versions have known weaknesses, and every supported client speaks 1.2.
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      // FTP deployment is not used, because azd and Core Tools deploy over HTTPS with Entra sign-in.
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      linuxFxVersion: isFlex ? null : 'Python|3.11'
      functionAppScaleLimit: isFlex ? null : maximumInstanceCount
    }
    functionAppConfig: isFlex ? {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageAccount.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityResourceId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    } : null
  }
}

// checkov reads this app settings resource as if it were the site configuration (web logs,
// .NET version, Easy Auth), so the checks skipped below do not apply to it.
resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_63: function apps trace requests in Application Insights instead of App Service HTTP logs
  // checkov:skip=CKV_AZURE_65: detailed error pages are an App Service web feature, and errors go to Application Insights
  // checkov:skip=CKV_AZURE_66: failed request tracing is an App Service web feature, and failures go to Application Insights
  // checkov:skip=CKV_AZURE_80: the app runs Python, not .NET
  // checkov:skip=CKV_AZURE_13: the app validates Microsoft Entra tokens itself with PyJWT, so App Service Authentication stays off
  // checkov:skip=CKV_AZURE_88: Azure Files needs storage account keys, which this template disables
  // checkov:skip=CKV_AZURE_222: as for the site, the API is public and its data routes require a token
  parent: site
  name: 'appsettings'
  properties: union(appSettings, platformSettings, isFlex ? {} : union(classicSettings, classicPackageSettings))
}

// Basic (user name and password) publishing credentials stay off. Deployments sign in with
// Microsoft Entra ID instead, so no long-lived deployment password exists.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output uri string = 'https://${site.properties.defaultHostName}'
