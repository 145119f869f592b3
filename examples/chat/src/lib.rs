//! A chat server on Helios rooms, and its client on `starling`.
//!
//! The flow of a user (what [`ChatClient`] does for you):
//!
//! 1. `helios:identify {name: nick}`: claims the nickname. Names are first
//!    come, first served, so two users cannot share one (`NAME_TAKEN`),
//!    and `helios:presence` lists members by it.
//! 2. `chat:join {room, nick}`: the server checks the nick is the one the
//!    connection claimed, stores it on the connection and answers with the
//!    room's topic, `chat:<room>`.
//! 3. `helios:subscribe {topic}`: the validator of the `chat:*` rooms lets
//!    in only connections that went through `chat:join` for that room; the
//!    `room:subscribed` hook then announces `{type: "join", nick, at}` to
//!    the room.
//! 4. `chat:send {room, text}` broadcasts `{type: "message", from, text,
//!    at}` to the room. Clients cannot `helios:publish` to `chat:*` rooms
//!    themselves, so `from` cannot be forged.
//! 5. Leaving (unsubscribe or disconnect) announces `{type: "leave", nick,
//!    at}` from the `room:unsubscribed` hook.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7701").await?;
//! example_chat::app()
//!     .serve(listener, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```

mod client;
mod events;
mod server;

pub use client::{ChatClient, Room};
pub use events::{ChatEvent, JoinArgs, Joined, SendArgs, Sent, room_topic};
pub use server::app;
