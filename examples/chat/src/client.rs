//! The client side, on `starling`.

use starling::{Client, ClientError, RecvError, Subscription};

use crate::events::{ChatEvent, JoinArgs, Joined, SendArgs, Sent, room_topic};

/// A chat user: one connection with a claimed nickname.
///
/// ```no_run
/// # async fn demo() -> Result<(), starling::ClientError> {
/// use example_chat::{ChatClient, ChatEvent};
/// let ada = ChatClient::connect("ws://127.0.0.1:7701/ws", "ada").await?;
/// let mut lobby = ada.join("lobby").await?;
/// ada.send("lobby", "hello").await?;
/// while let Ok(event) = lobby.next().await {
///     if let ChatEvent::Message { from, text, .. } = event {
///         println!("<{from}> {text}");
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ChatClient {
    client: Client,
    nick: String,
}

/// A joined room: its deliveries, decoded.
#[derive(Debug)]
pub struct Room {
    sub: Subscription,
}

impl ChatClient {
    /// Connects and claims `nick` with `helios:identify`.
    ///
    /// # Errors
    /// Connection errors; `NAME_TAKEN` when someone else holds the nick.
    pub async fn connect(url: &str, nick: &str) -> Result<Self, ClientError> {
        let client = Client::connect(url).await?;
        if let Err(e) = client.identify(nick).await {
            client.close().await;
            return Err(e);
        }
        Ok(Self {
            client,
            nick: nick.to_owned(),
        })
    }

    /// The nickname.
    pub fn nick(&self) -> &str {
        &self.nick
    }

    /// The underlying `starling` client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Joins a room: `chat:join`, then subscribes to its topic. The room's
    /// own join announcement is the first delivery.
    ///
    /// # Errors
    /// `INVALID_PAYLOAD` for a bad room name, request errors.
    pub async fn join(&self, room: &str) -> Result<Room, ClientError> {
        let args = JoinArgs {
            room: room.to_owned(),
            nick: self.nick.clone(),
        };
        let joined: Joined = self.client.call("chat:join", &args).await?;
        let sub = self.client.subscribe(joined.topic).await?;
        Ok(Room { sub })
    }

    /// Sends a message to a room this client joined.
    ///
    /// # Errors
    /// `FORBIDDEN` when not in the room, `INVALID_PAYLOAD` for an empty or
    /// too long text, request errors.
    pub async fn send(&self, room: &str, text: &str) -> Result<Sent, ClientError> {
        let args = SendArgs {
            room: room.to_owned(),
            text: text.to_owned(),
        };
        self.client.call("chat:send", &args).await
    }

    /// The nicknames in a room, sorted (`helios:presence`).
    ///
    /// # Errors
    /// Request errors.
    pub async fn who(&self, room: &str) -> Result<Vec<String>, ClientError> {
        let presence = self.client.presence(room_topic(room)).await?;
        let mut nicks: Vec<String> = presence["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["name"].as_str().map(str::to_owned))
            .collect();
        nicks.sort();
        Ok(nicks)
    }

    /// Closes the connection; the rooms see this user leave.
    pub async fn close(&self) {
        self.client.close().await;
    }
}

impl Room {
    /// The room's topic (`chat:<room>`).
    pub fn topic(&self) -> &str {
        self.sub.topic()
    }

    /// The next event of the room. Deliveries that are not chat events are
    /// skipped.
    ///
    /// # Errors
    /// [`RecvError::Lagged`] when this reader fell behind (the next call
    /// goes on), [`RecvError::Closed`] when the connection ended.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn next(&mut self) -> Result<ChatEvent, RecvError> {
        loop {
            let note = self.sub.recv().await?;
            match serde_json::from_value::<ChatEvent>(note.data) {
                Ok(event) => return Ok(event),
                Err(e) => tracing::debug!(error = %e, "skipping a non-chat delivery"),
            }
        }
    }

    /// Leaves the room; the others see a `leave` event.
    ///
    /// # Errors
    /// Request errors.
    pub async fn leave(self) -> Result<(), ClientError> {
        self.sub.unsubscribe().await
    }
}
