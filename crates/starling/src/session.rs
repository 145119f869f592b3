//! What the server said about this session: the welcome, and why it ended.

use serde::Deserialize;

/// The topic of the notification the server sends right after the upgrade.
pub(crate) const WELCOME_TOPIC: &str = "helios:welcome";
/// The topic of a cancel notification (either direction).
pub(crate) const CANCEL_TOPIC: &str = "helios:cancel";

/// The data of the `helios:welcome` notification.
///
/// ```no_run
/// # async fn demo() -> Result<(), starling::ClientError> {
/// let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
/// let welcome = client.welcome();
/// println!("I am {} (recovered: {})", welcome.starling_id, welcome.recovered);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Welcome {
    /// This connection's id (the target of `PeerRef::Id`).
    #[serde(default)]
    pub starling_id: String,
    /// Whether the server restored an earlier session (`?recover=TOKEN`).
    #[serde(default)]
    pub recovered: bool,
    /// The server's clock, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub server_time: u64,
}

/// How the connection ended.
///
/// ```no_run
/// # async fn demo() -> Result<(), starling::ClientError> {
/// let client = starling::Client::connect("ws://127.0.0.1:7700/ws").await?;
/// let info = client.closed().await;
/// println!("closed with {:?}: {}", info.code, info.reason);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CloseInfo {
    /// The WebSocket close code, when a close frame was received.
    pub code: Option<u16>,
    /// The close reason, or a description of the failure that ended the
    /// connection.
    pub reason: String,
    /// Whether this side initiated the close.
    pub by_client: bool,
}
