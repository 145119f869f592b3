//! What travels between the chat server and its clients.

use serde::{Deserialize, Serialize};

/// Longest nickname, in characters.
pub(crate) const MAX_NICK: usize = 32;
/// Longest room name, in characters.
pub(crate) const MAX_ROOM: usize = 64;
/// Longest message, in characters.
pub(crate) const MAX_TEXT: usize = 2000;

/// A delivery in a chat room (the `data` of the room's notifications).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ChatEvent {
    /// Someone joined the room.
    Join {
        /// Their nickname.
        nick: String,
        /// Server time, ms since the Unix epoch.
        at: u64,
    },
    /// Someone left the room (or disconnected).
    Leave {
        /// Their nickname.
        nick: String,
        /// Server time, ms since the Unix epoch.
        at: u64,
    },
    /// A message.
    Message {
        /// The sender's nickname, set by the server.
        from: String,
        /// The text.
        text: String,
        /// Server time, ms since the Unix epoch.
        at: u64,
    },
}

/// Payload of `chat:join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinArgs {
    /// Room name (letters, digits, `_` and `-`), without the `chat:` prefix.
    pub room: String,
    /// Nickname; must be the name this connection claimed with
    /// `helios:identify`.
    pub nick: String,
}

/// Result of `chat:join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Joined {
    /// The topic to subscribe to (`chat:<room>`).
    pub topic: String,
    /// The nickname in force.
    pub nick: String,
}

/// Payload of `chat:send`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendArgs {
    /// Room name, without the `chat:` prefix.
    pub room: String,
    /// The message (1 to 2000 characters).
    pub text: String,
}

/// Result of `chat:send`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sent {
    /// Position of the message in the room's stream.
    pub offset: u64,
    /// Server time stamped on the message.
    pub at: u64,
}

/// The topic of a room: `chat:<room>`.
pub fn room_topic(room: &str) -> String {
    format!("chat:{room}")
}

fn is_word(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.chars().count() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Why a room name is refused, if it is.
pub(crate) fn check_room(room: &str) -> Result<(), String> {
    if is_word(room, MAX_ROOM) {
        Ok(())
    } else {
        Err(format!(
            "room names are 1 to {MAX_ROOM} letters, digits, `_` or `-`, not {room:?}"
        ))
    }
}

/// Why a nickname is refused, if it is.
pub(crate) fn check_nick(nick: &str) -> Result<(), String> {
    if is_word(nick, MAX_NICK) {
        Ok(())
    } else {
        Err(format!(
            "nicknames are 1 to {MAX_NICK} letters, digits, `_` or `-`, not {nick:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_a_type_tag() {
        let e = ChatEvent::Message {
            from: "ada".into(),
            text: "hi".into(),
            at: 1,
        };
        let v = serde_json::to_value(&e).expect("serialise");
        assert_eq!(
            v,
            serde_json::json!({"type": "message", "from": "ada", "text": "hi", "at": 1})
        );
        assert_eq!(
            serde_json::from_value::<ChatEvent>(v).expect("deserialise"),
            e
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_room("lobby-1").is_ok());
        assert!(check_room("").is_err());
        assert!(check_room("a b").is_err());
        assert!(check_room("a:b").is_err());
        assert!(check_nick(&"x".repeat(MAX_NICK)).is_ok());
        assert!(check_nick(&"x".repeat(MAX_NICK + 1)).is_err());
    }
}
