//! What the server said about this session: the welcome, and why it ended.

use serde::Deserialize;

/// The topic of the notification the server sends right after the upgrade.
pub(crate) const WELCOME_TOPIC: &str = "helios:welcome";
/// The topic of a cancel notification (either direction).
pub(crate) const CANCEL_TOPIC: &str = "helios:cancel";
/// The method that hands out a recovery token.
pub(crate) const GET_TOKEN: &str = "starling:getToken";
/// The welcome `reason` when a recovery raced the server's close of the old
/// socket: retry shortly instead of accepting a fresh session.
pub(crate) const SESSION_HELD: &str = "the session is still held by a live connection";

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
    /// On a recovery: whether some room's history no longer covered the gap.
    #[serde(default)]
    pub missed: bool,
    /// On a recovery: the rooms with a gap.
    #[serde(default)]
    pub missed_rooms: Vec<String>,
    /// On a recovery: the rooms the server restored.
    #[serde(default)]
    pub rooms: Vec<String>,
    /// When a recovery was refused: why.
    #[serde(default)]
    pub reason: Option<String>,
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
