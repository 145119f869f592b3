//! The web console (`/console`) and the operations endpoints the binary adds
//! to the library's routes: `GET /console/api/stats` (JSON the console
//! polls) and `GET /metrics` (Prometheus).
//!
//! The page is one self-contained HTML file embedded in the binary: no CDN,
//! no build step.

use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use helios::Helios;
use http::header;
use serde_json::{Value, json};

const INDEX: &str = include_str!("console/index.html");

/// Most connections and rooms listed in one stats answer.
const MAX_LISTED: usize = 200;

#[derive(Clone)]
struct Ops {
    helios: Helios,
    started: Instant,
    tls: bool,
}

/// `/metrics`, and the console when `console` is true.
pub(crate) fn routes(helios: Helios, console: bool, tls: bool) -> Router {
    let ops = Ops {
        helios,
        started: Instant::now(),
        tls,
    };
    let mut r = Router::new().route("/metrics", get(metrics));
    if console {
        r = r
            .route("/console", get(index))
            .route("/console/", get(index))
            .route("/console/api/stats", get(stats));
    }
    r.with_state(ops)
}

async fn metrics(State(ops): State<Ops>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ops.helios.render_metrics(),
    )
        .into_response()
}

async fn index() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(INDEX)).into_response()
}

async fn stats(State(ops): State<Ops>) -> Response {
    let helios = &ops.helios;
    let mut conns = helios.connections();
    conns.sort_by(|a, b| a.id().cmp(b.id()));
    let connections: Vec<Value> = conns
        .iter()
        .take(MAX_LISTED)
        .map(|c| {
            let mut rooms = c.rooms();
            rooms.sort();
            json!({
                "id": c.id(),
                "user": c.user_id(),
                "name": c.name(),
                "rooms": rooms,
                "encoding": format!("{:?}", c.encoding()).to_lowercase(),
            })
        })
        .collect();
    let mut rooms = helios.room_list();
    let subscriptions: usize = rooms.iter().map(|(_, n)| n).sum();
    rooms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let room_count = rooms.len();
    let rooms: Vec<Value> = rooms
        .into_iter()
        .take(MAX_LISTED)
        .map(|(topic, n)| json!({ "topic": topic, "subscribers": n }))
        .collect();
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "tls": ops.tls,
        "uptimeSecs": ops.started.elapsed().as_secs(),
        "connectionCount": conns.len(),
        "roomCount": room_count,
        "subscriptionCount": subscriptions,
        "connections": connections,
        "rooms": rooms,
        "metrics": helios.metrics().snapshot(),
    });
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}
