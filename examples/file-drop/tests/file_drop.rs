//! End to end over real sockets on 127.0.0.1: the file drop server
//! in-process, clients on `starling`.

use std::time::Duration;

use example_file_drop::{FileEntry, MAX_FILE_BYTES, client};
use starling::{Client, ClientError};

/// Every test body runs under this bound.
const TEST_LIMIT: Duration = Duration::from_secs(30);

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_LIMIT, f)
        .await
        .expect("test took too long");
}

async fn start() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(example_file_drop::app().serve(listener, std::future::pending()));
    format!("ws://{addr}/ws")
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

#[tokio::test]
async fn files_go_up_and_come_down_unchanged_between_clients() {
    bounded(async {
        let url = start().await;
        let alice = Client::connect(&url).await.expect("alice");
        let bob = Client::connect(&url).await.expect("bob");
        let photo = bytes(3 << 20, 1);
        let note = b"hello from alice".to_vec();
        let empty: Vec<u8> = Vec::new();
        // Two uploads at once on one connection, and an empty file.
        let (a, b) = tokio::join!(
            client::put(&alice, "photo.jpg", &photo),
            client::put(&alice, "note.txt", &note),
        );
        assert_eq!(a.expect("photo").bytes, photo.len());
        assert_eq!(b.expect("note").bytes, note.len());
        assert_eq!(
            client::put(&alice, "empty", &empty)
                .await
                .expect("empty")
                .bytes,
            0
        );

        let listed = client::list(&bob).await.expect("list");
        let entry = |name: &str, bytes: usize| FileEntry {
            name: name.into(),
            bytes,
        };
        assert_eq!(
            listed,
            vec![
                entry("empty", 0),
                entry("note.txt", note.len()),
                entry("photo.jpg", photo.len())
            ]
        );
        assert_eq!(client::get(&bob, "photo.jpg").await.expect("get"), photo);
        assert_eq!(client::get(&bob, "note.txt").await.expect("get"), note);
        assert_eq!(client::get(&bob, "empty").await.expect("get"), empty);

        // Replacing a file.
        client::put(&bob, "note.txt", b"v2").await.expect("replace");
        assert_eq!(client::get(&alice, "note.txt").await.expect("get"), b"v2");
    })
    .await;
}

#[tokio::test]
async fn unknown_files_and_oversized_uploads_are_refused() {
    bounded(async {
        let url = start().await;
        let c = Client::connect(&url).await.expect("client");
        let err = client::get(&c, "nope").await.expect_err("no such file");
        assert!(
            matches!(&err, ClientError::Server(e) if e.code.as_str() == "NOT_FOUND"),
            "{err:?}"
        );
        let too_big = bytes(MAX_FILE_BYTES + 1, 2);
        let err = client::put(&c, "big.bin", &too_big)
            .await
            .expect_err("too big");
        assert!(
            matches!(&err, ClientError::Server(e) if e.code.as_str() == "STREAM_ERROR"),
            "{err:?}"
        );
        assert!(
            client::list(&c).await.expect("list").is_empty(),
            "nothing stored"
        );
        // The connection is still fine.
        client::put(&c, "small", b"ok").await.expect("small");
    })
    .await;
}
