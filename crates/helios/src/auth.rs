//! Connection authentication: a hook the application (or the `helios`
//! binary) sets with [`Builder::authenticate`](crate::Builder::authenticate),
//! run on every WebSocket upgrade before the `101`, and again on
//! `helios:refresh` to extend a live connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use serde_json::Value;

use crate::glob::Pattern;

/// What the authentication hook sees of a handshake.
#[derive(Debug, Clone)]
pub struct HandshakeRequest {
    uri: Uri,
    headers: HeaderMap,
    remote_addr: Option<SocketAddr>,
    refresh: bool,
}

impl HandshakeRequest {
    pub(crate) fn new(uri: Uri, headers: HeaderMap, remote_addr: Option<SocketAddr>) -> Self {
        Self {
            uri,
            headers,
            remote_addr,
            refresh: false,
        }
    }

    /// The request a `helios:refresh {token}` call is checked as: no URI
    /// query, an `Authorization: Bearer` header with the new token.
    pub(crate) fn for_refresh(token: &str, remote_addr: Option<SocketAddr>) -> Self {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
            headers.insert(header::AUTHORIZATION, v);
        }
        Self {
            uri: Uri::from_static("/"),
            headers,
            remote_addr,
            refresh: true,
        }
    }

    /// The request URI (path and query).
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The client's address, when the server knows it
    /// ([`Helios::serve_with`](crate::Helios::serve_with) does).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// Whether this is a `helios:refresh` of a live connection rather than
    /// a handshake.
    pub fn is_refresh(&self) -> bool {
        self.refresh
    }

    /// A query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.uri.query()?;
        form_pairs(query).find_map(|(k, v)| (k == name).then_some(v))
    }

    /// The credential: `Authorization: Bearer …` first, else `?token=`.
    ///
    /// ```
    /// # use helios::HandshakeRequest;
    /// # fn demo(req: &HandshakeRequest) {
    /// if let Some(token) = req.token() { println!("token of {} bytes", token.len()); }
    /// # }
    /// ```
    pub fn token(&self) -> Option<String> {
        let bearer = self
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| rest.trim().to_owned())
            })
            .filter(|t| !t.is_empty());
        bearer.or_else(|| self.query_param("token").filter(|t| !t.is_empty()))
    }
}

fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Who a connection is, as the authentication hook decided.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// let auth = helios::Auth::user("ada")
///     .claims(serde_json::json!({"role": "admin"}))
///     .rooms(["chat:*", "user:ada"])
///     .expires_at(SystemTime::now() + Duration::from_secs(3600));
/// assert_eq!(auth.user_id(), Some("ada"));
/// assert!(auth.may_use_room("chat:lobby"));
/// assert!(!auth.may_use_room("user:bob"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Auth {
    user_id: Option<String>,
    claims: Value,
    rooms: Option<Vec<Pattern>>,
    expires_at: Option<SystemTime>,
}

impl Auth {
    /// An authenticated user.
    pub fn user(id: impl Into<String>) -> Self {
        Self {
            user_id: Some(id.into()),
            ..Self::default()
        }
    }

    /// The claims (e.g. a JWT's payload), visible to handlers.
    #[must_use]
    pub fn claims(mut self, claims: Value) -> Self {
        self.claims = claims;
        self
    }

    /// The room patterns (`*` one segment, `**` any) this user may use in
    /// rooms whose rule is [`Access::Claimed`](crate::Access::Claimed).
    /// Malformed patterns are ignored.
    #[must_use]
    pub fn rooms<I, S>(mut self, patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.rooms = Some(
            patterns
                .into_iter()
                .filter_map(|p| Pattern::new(p.as_ref()).ok())
                .collect(),
        );
        self
    }

    /// When the credential expires: the connection is closed with 4001 then,
    /// unless `helios:refresh` extended it.
    #[must_use]
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// The user id.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// The claims.
    pub fn claims_value(&self) -> &Value {
        &self.claims
    }

    /// The expiry, if any.
    pub fn expiry(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// Whether the room patterns allow `topic` (false when none were given).
    pub fn may_use_room(&self, topic: &str) -> bool {
        self.rooms
            .as_ref()
            .is_some_and(|ps| ps.iter().any(|p| p.matches(topic)))
    }

    /// Time left before expiry (`None`: never expires; zero: expired).
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.expires_at.map(|at| {
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
    }
}

/// Why the authentication hook refused a handshake; it becomes the HTTP
/// response (no WebSocket is opened).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthRejection {
    /// No credential, or a bad one (wrong key, `alg: none`, expired): 401.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// A valid credential that may not connect: 403.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The authentication service is down: 503.
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
}

impl AuthRejection {
    /// The HTTP status the handshake is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), self.to_string()).into_response();
        if self.status() == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Closes `conn` with 4001 once its credential expires; a
/// `helios:refresh` that moved the expiry just makes it sleep again.
pub(crate) fn close_at_expiry(conn: crate::connection::Connection) {
    tokio::spawn(async move {
        loop {
            let Some(left) = conn.auth().and_then(|a| a.remaining()) else {
                return;
            };
            if left.is_zero() {
                tracing::info!(conn = %conn.id(), "credential expired, closing");
                conn.close(helios_protocol::CloseCode::Unauthorized);
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(left) => {}
                () = conn.closed() => return,
            }
        }
    });
}

/// The erased hook.
pub(crate) type AuthHook = Arc<
    dyn Fn(HandshakeRequest) -> BoxFuture<'static, Result<Option<Auth>, AuthRejection>>
        + Send
        + Sync,
>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_header_then_query() {
        let mut h = HeaderMap::new();
        let req =
            HandshakeRequest::new(Uri::from_static("/ws?a=1&token=abc%2Edef"), h.clone(), None);
        assert_eq!(req.token().as_deref(), Some("abc.def"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer xyz"),
        );
        let req = HandshakeRequest::new(Uri::from_static("/ws?token=abc"), h, None);
        assert_eq!(req.token().as_deref(), Some("xyz"));
        let req = HandshakeRequest::new(Uri::from_static("/ws?token=%zz"), HeaderMap::new(), None);
        assert_eq!(req.token().as_deref(), Some("%zz"));
    }
}
