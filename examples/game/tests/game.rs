//! End to end over real sockets on 127.0.0.1: the game server in-process,
//! players on `starling`.

use std::time::Duration;

use example_game::{GameClient, GameConfig, Snapshot};
use serde_json::json;
use starling::{Client, ErrorCode};

/// Every test body runs under this bound.
const TEST_LIMIT: Duration = Duration::from_secs(20);

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test took too long");
}

/// Starts the game server on an ephemeral port; returns its URL.
async fn start() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = GameConfig {
        tick_hz: 50,
        world_size: 100.0,
    };
    tokio::spawn(example_game::app_with(config).serve(listener, std::future::pending()));
    format!("ws://{addr}/ws")
}

/// Reads states until one satisfies `done`, checking that tick numbers
/// grow strictly along the way; returns that state and the ticks seen.
async fn wait_for(
    player: &mut GameClient,
    done: impl Fn(&Snapshot) -> bool,
) -> (Snapshot, Vec<u64>) {
    let mut ticks: Vec<u64> = Vec::new();
    loop {
        let state = player.next_state().await.expect("state");
        if let Some(&last) = ticks.last() {
            assert!(state.tick > last, "tick {} after {last}", state.tick);
        }
        ticks.push(state.tick);
        if done(&state) {
            return (state, ticks);
        }
    }
}

fn at(state: &Snapshot, id: u64, x: f64, y: f64) -> bool {
    state.player(id).is_some_and(|p| p.x == x && p.y == y)
}

#[tokio::test]
async fn two_players_see_each_other_move() {
    bounded(async {
        let url = start().await;
        let mut ada = GameClient::join(&url, "ada").await.expect("ada");
        let mut bob = GameClient::join(&url, "bob").await.expect("bob");
        assert_ne!(ada.player_id(), bob.player_id());

        ada.move_to(10.0, 20.0).await.expect("move");
        // Clamped to the world (0..=100).
        let kept = bob.move_to(150.0, -5.0).await.expect("move");
        assert_eq!((kept.x, kept.y), (100.0, 0.0));

        let (a, b) = (ada.player_id(), bob.player_id());
        let both = move |s: &Snapshot| at(s, a, 10.0, 20.0) && at(s, b, 100.0, 0.0);
        let (state, _) = wait_for(&mut ada, both).await;
        assert_eq!(state.players.len(), 2);
        assert_eq!(state.player(b).map(|p| p.name.as_str()), Some("bob"));
        let (seen_by_bob, _) = wait_for(&mut bob, both).await;
        assert_eq!(seen_by_bob.player(a).map(|p| p.name.as_str()), Some("ada"));

        // A few more ticks keep counting up.
        let first = seen_by_bob.tick;
        let (later, ticks) = wait_for(&mut bob, |s| s.tick >= first + 3).await;
        assert!(later.tick > first);
        assert!(ticks.windows(2).all(|w| w[0] < w[1]));
    })
    .await;
}

#[tokio::test]
async fn a_leaver_disappears_from_the_state() {
    bounded(async {
        let url = start().await;
        let mut ada = GameClient::join(&url, "ada").await.expect("ada");
        let bob = GameClient::join(&url, "bob").await.expect("bob");
        let b = bob.player_id();
        let (state, _) = wait_for(&mut ada, |s| s.player(b).is_some()).await;
        let before = state.tick;

        bob.close().await;
        let (state, _) = wait_for(&mut ada, |s| s.player(b).is_none()).await;
        assert!(state.tick > before);
        assert_eq!(state.players.len(), 1);
        assert_eq!(state.players[0].id, ada.player_id());

        // A new player gets a fresh id and ticks go on from where they were.
        let carol = GameClient::join(&url, "carol").await.expect("carol");
        assert!(carol.player_id() > b);
        let c = carol.player_id();
        let (state, _) = wait_for(&mut ada, |s| s.player(c).is_some()).await;
        assert!(state.tick > before);
    })
    .await;
}

#[tokio::test]
async fn spectators_watch_and_the_loop_restarts_after_an_empty_game() {
    bounded(async {
        let url = start().await;
        let ada = GameClient::join(&url, "ada").await.expect("ada");
        let spectator = Client::connect(&url).await.expect("spectator");
        let mut watch = spectator.subscribe("game:state").await.expect("watch");
        let first: Snapshot =
            serde_json::from_value(watch.recv().await.expect("state").data).expect("snapshot");
        ada.close().await;

        // Everyone gone: the loop stops. A new player starts it again, and
        // the tick numbers keep growing.
        let mut bob = GameClient::join(&url, "bob").await.expect("bob");
        let b = bob.player_id();
        let (state, _) =
            wait_for(&mut bob, |s| s.player(b).is_some() && s.players.len() == 1).await;
        assert!(state.tick > first.tick);
    })
    .await;
}

#[tokio::test]
async fn rules_are_enforced() {
    bounded(async {
        let url = start().await;
        let raw = Client::connect(&url).await.expect("connect");
        let err = raw
            .request("player:move", json!({"x": 1.0, "y": 1.0}))
            .await
            .expect_err("not a player");
        assert_eq!(err.code(), Some(ErrorCode::FORBIDDEN));
        let err = raw
            .request("game:join", json!({"name": "  "}))
            .await
            .expect_err("empty name");
        assert_eq!(err.code(), Some(ErrorCode::INVALID_PAYLOAD));
        let err = raw
            .request("player:move", json!({"x": "left"}))
            .await
            .expect_err("bad payload");
        assert_eq!(err.code(), Some(ErrorCode::INVALID_PAYLOAD));
        let err = raw
            .publish("game:state", json!({"tick": 999_999, "players": []}))
            .await
            .expect_err("clients cannot publish state");
        assert_eq!(err.code(), Some(ErrorCode::FORBIDDEN));
    })
    .await;
}
