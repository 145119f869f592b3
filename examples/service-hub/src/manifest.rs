//! What services and the hub tell each other.

use serde::{Deserialize, Serialize};

/// The method the hub calls on a service to learn what it serves.
pub const MANIFEST_METHOD: &str = "service:manifest";

/// What a service serves (the answer to `service:manifest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The service's name (its `helios:identify` name).
    pub name: String,
    /// The methods callers may reach through the hub.
    pub methods: Vec<String>,
}

/// Payload of `hub:register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The service's name; the connection must have claimed it with
    /// `helios:identify`.
    pub name: String,
    /// The methods it serves; when absent the hub asks the service with
    /// `service:manifest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
}

/// One entry of `hub:services` (and the answer to `hub:register`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInfo {
    /// The service's name.
    pub name: String,
    /// The methods callers may reach, sorted.
    pub methods: Vec<String>,
    /// The service's connection.
    pub starling_id: String,
}
