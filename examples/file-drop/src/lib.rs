//! A file drop: clients upload files as streams, list them, and download
//! them as streams. Files live in the server's memory.
//!
//! - `files:put {}` + a stream named after the file → `{name, bytes}`; a
//!   second upload under the same name replaces the first. Files over
//!   [`MAX_FILE_BYTES`] are refused while they stream (`stream:stop`, then
//!   `STREAM_ERROR`), and nothing is stored.
//! - `files:list {}` → `[{name, bytes}]`, sorted by name.
//! - `files:get {name}` → a stream of the file (name and size announced),
//!   then `{name, bytes}`; `NOT_FOUND` for an unknown name.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7704").await?;
//! example_file_drop::app()
//!     .serve(listener, async { let _ = tokio::signal::ctrl_c().await; })
//!     .await
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use helios::{Context, Helios, MethodError, StreamInfo};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest file accepted.
pub const MAX_FILE_BYTES: usize = 16 << 20;

/// A stored file, as `files:list` and the answers describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The file name.
    pub name: String,
    /// Its size.
    pub bytes: usize,
}

type Store = Arc<Mutex<BTreeMap<String, Arc<[u8]>>>>;

/// The file drop server.
pub fn app() -> Helios {
    let store = Store::default();
    let (put, list, get) = (store.clone(), store.clone(), store);
    Helios::builder()
        .method("files:put", move |ctx: Context| {
            let store = put.clone();
            async move { put_file(ctx, &store).await }
        })
        .method("files:list", move |_ctx: Context| {
            let store = list.clone();
            async move { Ok::<_, MethodError>(entries(&store)) }
        })
        .method("files:get", move |ctx: Context| {
            let store = get.clone();
            async move { get_file(ctx, &store).await }
        })
        .build()
}

async fn put_file(ctx: Context, store: &Store) -> Result<FileEntry, MethodError> {
    let file = ctx.stream().await?;
    let name = match file.name() {
        Some(name) if !name.is_empty() && name.len() <= 255 => name.to_owned(),
        _ => {
            return Err(MethodError::new(
                "INVALID_PAYLOAD".into(),
                "a file needs a name (1 to 255 bytes) in its stream:open",
            ));
        }
    };
    let bytes = file.read_to_end(MAX_FILE_BYTES).await?;
    let entry = FileEntry {
        name: name.clone(),
        bytes: bytes.len(),
    };
    store.lock().insert(name, bytes.into());
    Ok(entry)
}

async fn get_file(ctx: Context, store: &Store) -> Result<FileEntry, MethodError> {
    let name = ctx
        .payload
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(bytes) = store.lock().get(name).cloned() else {
        return Err(MethodError::new(
            "NOT_FOUND".into(),
            format!("no file named {name:?}"),
        ));
    };
    let info = StreamInfo::file(name, bytes.len() as u64);
    let mut out = ctx.open_stream(info).await?;
    out.write(&bytes).await?;
    out.end().await?;
    Ok(FileEntry {
        name: name.to_owned(),
        bytes: bytes.len(),
    })
}

fn entries(store: &Store) -> Vec<FileEntry> {
    store
        .lock()
        .iter()
        .map(|(name, bytes)| FileEntry {
            name: name.clone(),
            bytes: bytes.len(),
        })
        .collect()
}

/// The client side, on `starling`.
pub mod client {
    use starling::{Client, ClientError, StreamInfo};

    use crate::FileEntry;

    /// Uploads `bytes` as `name`.
    ///
    /// # Errors
    /// The server's refusal (`STREAM_ERROR` past the size limit), or a
    /// closed connection.
    pub async fn put(client: &Client, name: &str, bytes: &[u8]) -> Result<FileEntry, ClientError> {
        let info = StreamInfo::file(name, bytes.len() as u64);
        let (call, mut upload) = client
            .request_streaming("files:put", serde_json::json!({}), info)
            .await?;
        // A refused upload stops the writer; the answer says why.
        if upload.write(bytes).await.is_ok() {
            let _ = upload.end().await;
        }
        let answer = call.await?;
        serde_json::from_value(answer).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Downloads `name`.
    ///
    /// # Errors
    /// `NOT_FOUND`, or a stream that did not complete.
    pub async fn get(client: &Client, name: &str) -> Result<Vec<u8>, ClientError> {
        let call = client
            .send_request(
                "files:get",
                serde_json::json!({ "name": name }),
                Default::default(),
            )
            .await?;
        // Read the stream before awaiting the answer: the server answers
        // once the whole file went out, which takes our credit.
        let read = match client.incoming_stream(call.id()).await {
            Ok(stream) => stream.read_to_end(crate::MAX_FILE_BYTES).await,
            Err(e) => Err(e),
        };
        // The server's error (NOT_FOUND) says more than the missing stream.
        let answer = call.await?;
        let bytes = read.map_err(|e| ClientError::Protocol(e.to_string()))?;
        let entry: FileEntry =
            serde_json::from_value(answer).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if entry.bytes != bytes.len() {
            return Err(ClientError::Protocol(format!(
                "{name}: announced {} bytes, got {}",
                entry.bytes,
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// The stored files.
    ///
    /// # Errors
    /// A closed connection.
    pub async fn list(client: &Client) -> Result<Vec<FileEntry>, ClientError> {
        client.call("files:list", &serde_json::json!({})).await
    }
}
