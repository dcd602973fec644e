//! The `mcp` plugin: MCP server catalogs in both real formats.
//!
//! - Kubeflow: `mcp_servers:` with tools, endpoints, runtimeMetadata, securityIndicators...
//! - Flat (kf-reg prototype): `mcpservers:` with `serverUrl`, `transportType`, `toolCount`...
//!
//! Both normalise into one [`McpServer`]; a field that only one format has stays `None` in the
//! other.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::locate;
use super::models::CustomProperties;
use super::{Entity, Loaded, unique_names};
use crate::diagnostics::{Diagnostic, Layer};
use crate::yaml::{find_key_value, strict_parse};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct McpCatalogFile {
    #[expect(dead_code, reason = "a catalog file's `source:` label is accepted, the entry names the source")]
    source: Option<String>,
    mcp_servers: Option<Vec<KubeflowServer>>,
    mcpservers: Option<Vec<FlatServer>>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpToolParameter {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub required: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpTool {
    pub name: String,
    pub description: Option<String>,
    pub access_type: Option<String>,
    #[serde(default)]
    pub parameters: Vec<McpToolParameter>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpEndpoints {
    pub http: Option<String>,
    pub sse: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpSecurityIndicators {
    pub verified_source: Option<bool>,
    pub secure_endpoint: Option<bool>,
    pub sast: Option<bool>,
    pub read_only_tools: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpArtifact {
    pub uri: String,
    pub create_time_since_epoch: Option<String>,
    pub last_update_time_since_epoch: Option<String>,
}

/// Kubeflow `mcp_servers:` entry (upstream `MCPServer`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KubeflowServer {
    name: String,
    id: Option<String>,
    external_id: Option<String>,
    description: Option<String>,
    provider: Option<String>,
    logo: Option<String>,
    version: Option<String>,
    tags: Option<Vec<String>>,
    license: Option<String>,
    #[serde(rename = "license_link")]
    license_link: Option<String>,
    tool_count: Option<i64>,
    tools: Option<Vec<McpTool>>,
    security_indicators: Option<McpSecurityIndicators>,
    deployment_mode: Option<String>,
    transports: Option<Vec<String>>,
    #[serde(default)]
    artifacts: Vec<McpArtifact>,
    endpoints: Option<McpEndpoints>,
    readme: Option<String>,
    documentation_url: Option<String>,
    repository_url: Option<String>,
    source_code: Option<String>,
    published_date: Option<String>,
    last_updated: Option<String>,
    runtime_metadata: Option<Json>,
    custom_properties: Option<CustomProperties>,
    create_time_since_epoch: Option<String>,
    last_update_time_since_epoch: Option<String>,
}

/// Flat `mcpservers:` entry (kf-reg `catalog.yaml` properties plus BaseResource fields).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FlatServer {
    name: String,
    id: Option<String>,
    external_id: Option<String>,
    description: Option<String>,
    server_url: Option<String>,
    transport_type: Option<String>,
    tool_count: Option<i64>,
    resource_count: Option<i64>,
    prompt_count: Option<i64>,
    deployment_mode: Option<String>,
    image: Option<String>,
    endpoint: Option<String>,
    supported_transports: Option<String>,
    license: Option<String>,
    verified: Option<bool>,
    certified: Option<bool>,
    provider: Option<String>,
    logo: Option<String>,
    category: Option<String>,
    custom_properties: Option<CustomProperties>,
    create_time_since_epoch: Option<String>,
    last_update_time_since_epoch: Option<String>,
}

/// The normalised MCP server entity. Never read from a catalog file directly (the two formats
/// are), so it is only serialised.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct McpServer {
    pub name: String,
    pub id: Option<String>,
    pub external_id: Option<String>,
    pub description: Option<String>,
    pub provider: Option<String>,
    pub logo: Option<String>,
    pub version: Option<String>,
    pub tags: Vec<String>,
    pub license: Option<String>,
    pub license_link: Option<String>,
    pub tool_count: i64,
    pub resource_count: Option<i64>,
    pub prompt_count: Option<i64>,
    pub tools: Vec<McpTool>,
    pub security_indicators: Option<McpSecurityIndicators>,
    pub deployment_mode: Option<String>,
    pub transports: Vec<String>,
    pub artifacts: Vec<McpArtifact>,
    pub endpoints: Option<McpEndpoints>,
    pub server_url: Option<String>,
    pub image: Option<String>,
    pub category: Option<String>,
    pub verified: Option<bool>,
    pub certified: Option<bool>,
    pub readme: Option<String>,
    pub documentation_url: Option<String>,
    pub repository_url: Option<String>,
    pub source_code: Option<String>,
    pub published_date: Option<String>,
    pub last_updated: Option<String>,
    pub runtime_metadata: Option<Json>,
    pub custom_properties: Option<CustomProperties>,
    pub create_time_since_epoch: Option<String>,
    pub last_update_time_since_epoch: Option<String>,
    /// `mcp_servers` or `mcpservers`: which format the entry came from.
    pub format: FormatName,
}

/// Which of the two formats an MCP server entry came from: `mcp_servers` or `mcpservers`.
pub type FormatName = &'static str;

impl From<KubeflowServer> for McpServer {
    fn from(s: KubeflowServer) -> Self {
        let tools = s.tools.unwrap_or_default();
        McpServer {
            tool_count: s.tool_count.unwrap_or(i64::try_from(tools.len()).unwrap_or(i64::MAX)),
            name: s.name,
            id: s.id,
            external_id: s.external_id,
            description: s.description,
            provider: s.provider,
            logo: s.logo,
            version: s.version,
            tags: s.tags.unwrap_or_default(),
            license: s.license,
            license_link: s.license_link,
            resource_count: None,
            prompt_count: None,
            tools,
            security_indicators: s.security_indicators,
            deployment_mode: s.deployment_mode,
            transports: s.transports.unwrap_or_default(),
            artifacts: s.artifacts,
            endpoints: s.endpoints,
            server_url: None,
            image: None,
            category: None,
            verified: None,
            certified: None,
            readme: s.readme,
            documentation_url: s.documentation_url,
            repository_url: s.repository_url,
            source_code: s.source_code,
            published_date: s.published_date,
            last_updated: s.last_updated,
            runtime_metadata: s.runtime_metadata,
            custom_properties: s.custom_properties,
            create_time_since_epoch: s.create_time_since_epoch,
            last_update_time_since_epoch: s.last_update_time_since_epoch,
            format: "mcp_servers",
        }
    }
}

impl From<FlatServer> for McpServer {
    fn from(s: FlatServer) -> Self {
        let mut transports: Vec<String> = s
            .supported_transports
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if let Some(t) = &s.transport_type
            && !transports.contains(t)
        {
            transports.insert(0, t.clone());
        }
        let endpoints = s.endpoint.as_ref().map(|e| McpEndpoints { http: Some(e.clone()), sse: None });
        McpServer {
            name: s.name,
            id: s.id,
            external_id: s.external_id,
            description: s.description,
            provider: s.provider,
            logo: s.logo,
            license: s.license,
            tool_count: s.tool_count.unwrap_or(0),
            resource_count: s.resource_count,
            prompt_count: s.prompt_count,
            deployment_mode: s.deployment_mode,
            transports,
            endpoints,
            server_url: s.server_url,
            image: s.image,
            category: s.category,
            verified: s.verified,
            certified: s.certified,
            custom_properties: s.custom_properties,
            create_time_since_epoch: s.create_time_since_epoch,
            last_update_time_since_epoch: s.last_update_time_since_epoch,
            format: "mcpservers",
            ..McpServer::default()
        }
    }
}

const DEPLOYMENT_MODES: [&str; 2] = ["local", "remote"];
const TRANSPORTS: [&str; 3] = ["stdio", "http", "sse"];
const ACCESS_TYPES: [&str; 3] = ["read_only", "read_write", "execute"];

pub fn load(text: &str, file: &str) -> Result<Loaded, Vec<Diagnostic>> {
    let doc: McpCatalogFile = strict_parse(text, file).map_err(|d| vec![d])?;
    let (list_key, servers): (&str, Vec<McpServer>) = match (doc.mcp_servers, doc.mcpservers) {
        (Some(_), Some(_)) => {
            return Err(vec![
                Diagnostic::error(Layer::Fields, "both `mcp_servers` and `mcpservers` are present")
                    .in_file(file)
                    .field("mcpservers")
                    .hint("use one list per file: `mcp_servers` (Kubeflow) or `mcpservers` (flat)"),
            ]);
        }
        (Some(list), None) => ("mcp_servers", list.into_iter().map(McpServer::from).collect()),
        (None, Some(list)) => ("mcpservers", list.into_iter().map(McpServer::from).collect()),
        (None, None) => ("mcp_servers", Vec::new()),
    };
    let names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
    let (keep, mut diagnostics) = unique_names(&names, text, file, list_key);
    let mut entities = Vec::with_capacity(keep.len());
    // Moved into the entities, not cloned (see the models plugin).
    let mut servers: Vec<Option<McpServer>> = servers.into_iter().map(Some).collect();
    for i in keep {
        let Some(s) = servers[i].take() else { continue };
        let mut ok = true;
        let mut bad = |field: String, key: &str, value: &str, allowed: &[&str]| {
            let (line, col) = locate(&diagnostics, || find_key_value(text, key, value, 0));
            diagnostics.push(
                Diagnostic::error(Layer::Plugin, format!("invalid {key} `{value}` in server `{}`", s.name))
                    .in_file(file)
                    .at(line, col)
                    .field(field)
                    .hint(format!("use one of: {}", allowed.join(", "))),
            );
        };
        if let Some(m) = s.deployment_mode.as_deref()
            && !DEPLOYMENT_MODES.contains(&m)
        {
            bad(format!("{list_key}[{i}].deploymentMode"), "deploymentMode", m, &DEPLOYMENT_MODES);
            ok = false;
        }
        for t in &s.transports {
            if !TRANSPORTS.contains(&t.as_str()) {
                bad(format!("{list_key}[{i}].transports"), "transports", t, &TRANSPORTS);
                ok = false;
            }
        }
        for (j, tool) in s.tools.iter().enumerate() {
            if let Some(a) = tool.access_type.as_deref()
                && !ACCESS_TYPES.contains(&a)
            {
                bad(format!("{list_key}[{i}].tools[{j}].accessType"), "accessType", a, &ACCESS_TYPES);
                ok = false;
            }
        }
        if ok {
            entities.push(Entity::McpServer(Box::new(s)));
        }
    }
    Ok(Loaded { entities, diagnostics })
}
