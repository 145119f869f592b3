//! Auto-reconnect with session recovery: the supervisor that owns the
//! command queue, runs one connection after another on the same shared
//! state, and decides after each loss whether and how to come back.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_websockets::{CloseCode, Message as WsMessage};

use crate::connection::{Cause, Command, Connection, Startup, TaskConfig};
use crate::dial::{Dialed, Dialer, Ws, recover_url};
use crate::events::ClientEvent;
use crate::methods::Methods;
use crate::session::{CloseInfo, SESSION_HELD};
use crate::shared::{LinkState, Shared};

/// When and how often to reconnect after an unexpected loss; see
/// [`ClientBuilder::reconnect`](crate::ClientBuilder::reconnect).
///
/// Attempt `n` (0-based) waits `min(initial × factorⁿ, max)`, then that
/// times a random factor in `[1 − jitter, 1 + jitter]` (clamped to
/// `max`), so clients cut off together do not come back together.
///
/// ```
/// use std::time::Duration;
/// use starling::ReconnectPolicy;
/// let p = ReconnectPolicy { jitter: 0.0, ..ReconnectPolicy::default() };
/// assert_eq!(p.delay(0), Duration::from_millis(500));
/// assert_eq!(p.delay(1), Duration::from_secs(1));
/// assert_eq!(p.delay(10), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReconnectPolicy {
    /// Wait before the first attempt (default 500 ms).
    pub initial: Duration,
    /// Longest wait between attempts (default 10 s).
    pub max: Duration,
    /// Growth of the wait per attempt (default 2.0).
    pub factor: f64,
    /// Relative randomization of each wait, 0.0 to 1.0 (default 0.5).
    pub jitter: f64,
    /// Attempts before giving up (the client then ends with
    /// [`ClientEvent::Closed`]); `None` (default) tries forever.
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(10),
            factor: 2.0,
            jitter: 0.5,
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    /// The wait before attempt `attempt` (0-based), jitter included.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = i32::try_from(attempt).unwrap_or(i32::MAX);
        let base = self.initial.as_secs_f64() * self.factor.max(1.0).powi(exp);
        let max = self.max.as_secs_f64();
        let base = if base.is_finite() { base.min(max) } else { max };
        let jitter = self.jitter.clamp(0.0, 1.0);
        let spread = 1.0 - jitter + 2.0 * jitter * random_unit();
        Duration::try_from_secs_f64((base * spread).min(max)).unwrap_or(self.max)
    }
}

/// A random number in `[0, 1)` (std's per-map random keys; enough for
/// jitter).
fn random_unit() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0);
    // 53 random bits make an exact f64 fraction.
    #[allow(clippy::cast_precision_loss)]
    let r = (h.finish() >> 11) as f64;
    r / (1u64 << 53) as f64
}

/// Whether a loss with this close code is worth a reconnect: no close
/// frame (abrupt loss), 1001 (going away), 1006, 1011–1014 (server error,
/// restart, try again later), 4008 (slow consumer) and 4100–4199 (ping
/// timeout, session replaced, …: "retry with recovery"). Every other code
/// is a deliberate close (1000, 1008, 1009, 4000–4099 "do not retry as is",
/// application codes) and ends the client.
pub(crate) fn retryable(code: Option<u16>) -> bool {
    match code {
        None | Some(1001 | 1006 | 1011..=1014 | 4008) => true,
        Some(c) => (4100..4200).contains(&c),
    }
}

/// First wait, and growth step, after the server said the session is still
/// held by the old (dead) socket.
const HELD_DELAY: Duration = Duration::from_millis(50);
const HELD_DELAY_MAX: Duration = Duration::from_millis(500);

pub(crate) struct Supervisor {
    pub(crate) dialer: Dialer,
    pub(crate) policy: Option<ReconnectPolicy>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) methods: Arc<Methods>,
    pub(crate) config: TaskConfig,
}

impl Supervisor {
    /// Runs connections until the client is done.
    pub(crate) async fn run(self, first: Dialed, mut commands: mpsc::Receiver<Command>) {
        let mut dialed = first;
        let mut startup = Startup {
            fetch_token: self.policy.is_some(),
            ..Startup::default()
        };
        let mut generation = 0;
        loop {
            generation += 1;
            self.shared.set_welcome(dialed.welcome.clone());
            self.shared.set_connected(true);
            startup.early = std::mem::take(&mut dialed.early);
            let conn = Connection::new(
                dialed.ws,
                Arc::clone(&self.shared),
                Arc::clone(&self.methods),
                self.config.clone(),
                generation,
            );
            let end = conn.run(&mut commands, startup).await;
            let closing = matches!(
                self.shared.state(),
                LinkState::Closing | LinkState::Closed(_)
            );
            if end.cause != Cause::Remote
                || closing
                || self.policy.is_none()
                || !retryable(end.info.code)
            {
                self.shared.set_closed(end.info);
                return;
            }
            self.shared.set_connected(false);
            self.shared.emit(ClientEvent::Disconnected {
                code: end.info.code,
                reason: end.info.reason.clone(),
            });
            self.shared.connection_lost(generation);
            match self.reconnect(&commands).await {
                Ok(next) => {
                    startup = self.after_reconnect(&next);
                    dialed = next;
                }
                Err(info) => {
                    self.shared.set_closed(info);
                    return;
                }
            }
        }
    }

    /// Dials until a socket is up, or the client is closed, or the attempts
    /// run out.
    async fn reconnect(&self, commands: &mpsc::Receiver<Command>) -> Result<Dialed, CloseInfo> {
        let Some(policy) = self.policy else {
            return Err(CloseInfo::default());
        };
        let mut attempt = 0u32;
        let mut held = Duration::ZERO;
        let mut last_error = String::new();
        loop {
            let delay = if held > Duration::ZERO {
                held
            } else {
                if policy.max_attempts.is_some_and(|max| attempt >= max) {
                    return Err(CloseInfo {
                        code: None,
                        reason: format!(
                            "gave up reconnecting after {attempt} attempts: {last_error}"
                        ),
                        by_client: false,
                    });
                }
                let delay = policy.delay(attempt);
                attempt += 1;
                self.shared
                    .emit(ClientEvent::Reconnecting { attempt, delay });
                delay
            };
            self.wait(delay, commands).await?;

            let token = self.shared.valid_token();
            let url = match &token {
                Some(token) => recover_url(&self.dialer.url, token, &self.shared.positions()),
                None => self.dialer.url.clone(),
            };
            // Offer only what the first socket agreed on: queued frames are
            // encoded already.
            let auth = self.shared.auth_token();
            match self
                .dialer
                .dial(&url, self.config.encoding, auth.as_deref())
                .await
            {
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "reconnect attempt failed");
                    last_error = e.to_string();
                    held = Duration::ZERO;
                }
                Ok(d) if d.encoding != self.config.encoding => {
                    last_error = format!("server switched encoding to {:?}", d.encoding);
                    close_quietly(d.ws);
                    held = Duration::ZERO;
                }
                Ok(d) if token.is_some() && d.welcome.reason.as_deref() == Some(SESSION_HELD) => {
                    // The server has not noticed the old socket is dead:
                    // the old one wins. Let this fresh session go and try
                    // again shortly; bounded by the token's lifetime (an
                    // expired token dials a fresh session).
                    tracing::debug!("session still held by the old socket; retrying");
                    close_quietly(d.ws);
                    held = (held * 2).clamp(HELD_DELAY, HELD_DELAY_MAX);
                }
                Ok(d) => return Ok(d),
            }
        }
    }

    /// Sleeps, unless the client is closed (or every handle dropped)
    /// meanwhile.
    async fn wait(
        &self,
        delay: Duration,
        commands: &mpsc::Receiver<Command>,
    ) -> Result<(), CloseInfo> {
        let closed_by_client = || CloseInfo {
            code: None,
            reason: "closed by the client while reconnecting".into(),
            by_client: true,
        };
        if commands.is_closed() {
            return Err(closed_by_client());
        }
        let mut state = self.shared.watch_state();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = state.wait_for(|s| matches!(s, LinkState::Closing | LinkState::Closed(_))) => {
                return Err(closed_by_client());
            }
        }
        if commands.is_closed() {
            return Err(closed_by_client());
        }
        Ok(())
    }

    /// Reports the new session and says what the new connection must redo.
    fn after_reconnect(&self, d: &Dialed) -> Startup {
        let previous_id = self
            .shared
            .welcome()
            .map(|w| w.starling_id)
            .unwrap_or_default();
        let w = &d.welcome;
        self.shared.emit(ClientEvent::Connected {
            starling_id: w.starling_id.clone(),
            recovered: w.recovered,
        });
        let fetch_token = self.shared.recovery_available() != Some(false);
        let rooms = self.shared.room_names();
        if w.recovered {
            self.shared.emit(ClientEvent::Recovered {
                starling_id: w.starling_id.clone(),
                missed_rooms: w.missed_rooms.clone(),
            });
            // Rooms joined locally that the server did not restore (their
            // subscribe was lost in flight) are joined again.
            let resubscribe = rooms.into_iter().filter(|r| !w.rooms.contains(r)).collect();
            Startup {
                resubscribe,
                fetch_token,
                ..Startup::default()
            }
        } else {
            // A fresh session: the old token is useless now.
            self.shared.set_token(None);
            self.shared.emit(ClientEvent::SessionReset {
                previous_id,
                starling_id: w.starling_id.clone(),
                reason: w.reason.clone(),
            });
            Startup {
                resubscribe: rooms,
                identify: self.shared.name(),
                fetch_token,
                ..Startup::default()
            }
        }
    }
}

/// Closes a socket we do not want, in the background.
fn close_quietly(mut ws: Ws) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = ws
                .send(WsMessage::close(Some(CloseCode::NORMAL_CLOSURE), ""))
                .await;
            // Read until the server ends it.
            while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_policy_by_close_code() {
        for code in [
            None,
            Some(1001),
            Some(1006),
            Some(4008),
            Some(4100),
            Some(4101),
        ] {
            assert!(retryable(code), "{code:?}");
        }
        for code in [
            Some(1000),
            Some(1008),
            Some(1009),
            Some(4001),
            Some(4003),
            Some(4029),
        ] {
            assert!(!retryable(code), "{code:?}");
        }
    }

    #[test]
    fn jittered_delay_stays_in_bounds() {
        let p = ReconnectPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            factor: 2.0,
            jitter: 0.5,
            max_attempts: None,
        };
        for attempt in 0..40 {
            let d = p.delay(attempt);
            assert!(d <= Duration::from_millis(1000), "{d:?}");
            let base = (100.0 * 2f64.powi(attempt as i32)).min(1000.0);
            assert!(d.as_secs_f64() * 1000.0 >= base * 0.5 - 1e-6, "{d:?}");
        }
        let a: Vec<_> = (0..8).map(|_| p.delay(3)).collect();
        assert!(a.iter().any(|d| *d != a[0]), "jitter varies: {a:?}");
    }
}
