//! The API description as data: every operation, parameter, model and field, with the first
//! Asterisk branch that has it.
//!
//! ```
//! use ari_proto::{catalog, Since};
//! let op = catalog::operation("channels", "originateWithId").unwrap();
//! assert_eq!(op.method, "POST");
//! assert_eq!(op.path, "/channels/{channelId}");
//! assert!(op.since <= Since::Asterisk18);
//! ```

use std::fmt;

/// An Asterisk branch whose API description the crate knows, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Since {
    /// Asterisk 18 (ARI 6.0.1) or older.
    Asterisk18,
    /// Asterisk 20 (ARI 8.0.0).
    Asterisk20,
    /// Asterisk 22 (ARI 10.0.0).
    Asterisk22,
    /// Asterisk 23 (ARI 11.0.0).
    Asterisk23,
    /// Asterisk's development branch (ARI 12.0.0), not in a release yet.
    Master,
}

impl Since {
    /// The ARI `apiVersion` of the branch's description.
    pub fn api_version(self) -> &'static str {
        match self {
            Since::Asterisk18 => "6.0.1",
            Since::Asterisk20 => "8.0.0",
            Since::Asterisk22 => "10.0.0",
            Since::Asterisk23 => "11.0.0",
            Since::Master => "12.0.0",
        }
    }
}

impl fmt::Display for Since {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Since::Asterisk18 => "Asterisk 18+",
            Since::Asterisk20 => "Asterisk 20+",
            Since::Asterisk22 => "Asterisk 22+",
            Since::Asterisk23 => "Asterisk 23+",
            Since::Master => "Asterisk master",
        })
    }
}

/// One REST operation of the API description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperationInfo {
    /// Resource (API file) it belongs to: `channels`, `bridges`, …
    pub resource: &'static str,
    /// The spec's nickname (node-ari-client's method name): `originateWithId`.
    pub nickname: &'static str,
    /// HTTP method.
    pub method: &'static str,
    /// Path template below `/ari`: `/channels/{channelId}`.
    pub path: &'static str,
    /// Declared response class: `Channel`, `List[Bridge]`, `void`, `binary`.
    pub response: &'static str,
    /// First branch that has it.
    pub since: Since,
    /// Its parameters.
    pub params: &'static [ParamInfo],
}

/// One parameter of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParamInfo {
    /// Name on the wire.
    pub name: &'static str,
    /// `path`, `query` or `body`.
    pub location: &'static str,
    /// Swagger data type.
    pub data_type: &'static str,
    /// Whether it is required.
    pub required: bool,
    /// Whether several values may be given (comma-joined).
    pub allow_multiple: bool,
    /// First branch that has it.
    pub since: Since,
}

/// One model (events included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModelInfo {
    /// Name: `Channel`, `StasisStart`.
    pub name: &'static str,
    /// API file that declares it.
    pub file: &'static str,
    /// Whether it is an event type.
    pub is_event: bool,
    /// First branch that has it.
    pub since: Since,
    /// Its own fields (inherited ones are on the base model).
    pub fields: &'static [FieldInfo],
}

/// One field of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FieldInfo {
    /// Name on the wire.
    pub name: &'static str,
    /// Swagger type.
    pub data_type: &'static str,
    /// Whether the description marks it required.
    pub required: bool,
    /// First branch that has it.
    pub since: Since,
}

pub use crate::generated::catalog::{MODELS, OPERATIONS};

/// Looks an operation up by resource and nickname.
pub fn operation(resource: &str, nickname: &str) -> Option<&'static OperationInfo> {
    OPERATIONS
        .iter()
        .find(|o| o.resource == resource && o.nickname == nickname)
}

/// Looks a model (or event type) up by name.
pub fn model(name: &str) -> Option<&'static ModelInfo> {
    MODELS.iter().find(|m| m.name == name)
}
