//! End to end over real sockets on 127.0.0.1: the chat server in-process,
//! users on `starling`.

use std::time::Duration;

use example_chat::{ChatClient, ChatEvent, Room};
use starling::{Client, ErrorCode};

/// Every test body runs under this bound.
const TEST_LIMIT: Duration = Duration::from_secs(20);

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test took too long");
}

/// Starts the chat server on an ephemeral port; returns its URL.
async fn start() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(example_chat::app().serve(listener, std::future::pending()));
    format!("ws://{addr}/ws")
}

async fn next(room: &mut Room) -> ChatEvent {
    room.next().await.expect("a chat event")
}

fn joined(event: &ChatEvent) -> Option<&str> {
    match event {
        ChatEvent::Join { nick, .. } => Some(nick),
        _ => None,
    }
}

#[tokio::test]
async fn two_users_exchange_messages_in_order() {
    bounded(async {
        let url = start().await;
        let ada = ChatClient::connect(&url, "ada").await.expect("ada");
        let mut ada_lobby = ada.join("lobby").await.expect("ada joins");
        assert_eq!(joined(&next(&mut ada_lobby).await), Some("ada"));

        let bob = ChatClient::connect(&url, "bob").await.expect("bob");
        let mut bob_lobby = bob.join("lobby").await.expect("bob joins");
        assert_eq!(joined(&next(&mut bob_lobby).await), Some("bob"));
        assert_eq!(joined(&next(&mut ada_lobby).await), Some("bob"));

        for i in 0..5 {
            ada.send("lobby", &format!("message {i}"))
                .await
                .expect("send");
        }
        bob.send("lobby", "  hi ada  ").await.expect("send");

        let expected: Vec<(String, String)> = (0..5)
            .map(|i| ("ada".to_owned(), format!("message {i}")))
            .chain([("bob".to_owned(), "hi ada".to_owned())])
            .collect();
        for room in [&mut ada_lobby, &mut bob_lobby] {
            let mut got = Vec::new();
            while got.len() < expected.len() {
                match next(room).await {
                    ChatEvent::Message { from, text, at } => {
                        assert!(at > 0);
                        got.push((from, text));
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(got, expected);
        }
    })
    .await;
}

#[tokio::test]
async fn presence_lists_the_room_and_disconnects_leave() {
    bounded(async {
        let url = start().await;
        let ada = ChatClient::connect(&url, "ada").await.expect("ada");
        let mut lobby = ada.join("lobby").await.expect("join");
        let bob = ChatClient::connect(&url, "bob").await.expect("bob");
        let _bob_lobby = bob.join("lobby").await.expect("join");
        let carol = ChatClient::connect(&url, "carol").await.expect("carol");
        let _carol_elsewhere = carol.join("elsewhere").await.expect("join");

        assert_eq!(ada.who("lobby").await.expect("who"), ["ada", "bob"]);
        assert_eq!(carol.who("elsewhere").await.expect("who"), ["carol"]);

        bob.close().await;
        loop {
            match next(&mut lobby).await {
                ChatEvent::Leave { nick, .. } => {
                    assert_eq!(nick, "bob");
                    break;
                }
                ChatEvent::Join { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(ada.who("lobby").await.expect("who"), ["ada"]);

        // The nickname is free again once its holder is gone.
        let bob_again = ChatClient::connect(&url, "bob").await.expect("bob again");
        bob_again.join("lobby").await.expect("rejoin");
        assert_eq!(joined(&next(&mut lobby).await), Some("bob"));
    })
    .await;
}

#[tokio::test]
async fn leaving_a_room_is_announced() {
    bounded(async {
        let url = start().await;
        let ada = ChatClient::connect(&url, "ada").await.expect("ada");
        let mut lobby = ada.join("lobby").await.expect("join");
        let bob = ChatClient::connect(&url, "bob").await.expect("bob");
        let bob_lobby = bob.join("lobby").await.expect("join");
        bob_lobby.leave().await.expect("leave");

        let events = [
            next(&mut lobby).await,
            next(&mut lobby).await,
            next(&mut lobby).await,
        ];
        assert!(matches!(&events[2], ChatEvent::Leave { nick, .. } if nick == "bob"));
        let err = bob
            .send("lobby", "still here?")
            .await
            .expect_err("not in the room");
        assert_eq!(err.code(), Some(ErrorCode::FORBIDDEN));
    })
    .await;
}

#[tokio::test]
async fn nicknames_are_unique_and_required() {
    bounded(async {
        let url = start().await;
        let _ada = ChatClient::connect(&url, "ada").await.expect("ada");
        let err = ChatClient::connect(&url, "ada").await.expect_err("taken");
        assert_eq!(err.code(), Some(ErrorCode::NAME_TAKEN));

        // chat:join under a nick the connection did not claim is refused.
        let raw = Client::connect(&url).await.expect("connect");
        let err = raw
            .request(
                "chat:join",
                serde_json::json!({"room": "lobby", "nick": "ada"}),
            )
            .await
            .expect_err("not identified");
        assert_eq!(err.code(), Some(ErrorCode::FORBIDDEN));

        // So is sending before joining (the middleware), and bad names.
        let err = raw
            .request(
                "chat:send",
                serde_json::json!({"room": "lobby", "text": "hi"}),
            )
            .await
            .expect_err("no nick");
        assert_eq!(err.code(), Some(ErrorCode::FORBIDDEN));
        let eve = ChatClient::connect(&url, "eve").await.expect("eve");
        let err = eve.join("no spaces").await.expect_err("bad room");
        assert_eq!(err.code(), Some(ErrorCode::INVALID_PAYLOAD));
    })
    .await;
}

#[tokio::test]
async fn rooms_are_guarded() {
    bounded(async {
        let url = start().await;
        let ada = ChatClient::connect(&url, "ada").await.expect("ada");
        let _lobby = ada.join("lobby").await.expect("join");

        // Subscribing without chat:join is refused by the validator...
        let err = ada
            .client()
            .subscribe("chat:private")
            .await
            .expect_err("not admitted");
        assert_eq!(err.code(), Some(ErrorCode::FORBIDDEN));
        // ...and nobody publishes to a chat room directly (no forged `from`).
        let err = ada
            .client()
            .publish(
                "chat:lobby",
                serde_json::json!({"type": "message", "from": "bob", "text": "x", "at": 1}),
            )
            .await
            .expect_err("publish closed");
        assert_eq!(err.code(), Some(ErrorCode::FORBIDDEN));
        let err = ada.send("lobby", "   ").await.expect_err("empty");
        assert_eq!(err.code(), Some(ErrorCode::INVALID_PAYLOAD));
    })
    .await;
}
