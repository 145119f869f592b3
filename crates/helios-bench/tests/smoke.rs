//! CI smoke test: the real server library in-process, `helios-bench rpc` for
//! about a second against it, and the JSON report parsed. No timing is
//! asserted: only that requests were answered.

use std::process::Command;

use serde_json::Value;

async fn start_server() -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let helios = helios::Helios::builder().build();
    tokio::spawn(helios.serve(listener, async move {
        let _ = stopped.await;
    }));
    (format!("ws://{addr}/ws"), stop)
}

fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_helios-bench"))
        .args(args)
        .output()
        .expect("run helios-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "helios-bench failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// `helios-bench rpc --url URL --connections 2 ARGS...`, off the runtime
/// (it blocks), given at most 20 s to finish.
async fn rpc(url: &str, args: &[&str]) -> Value {
    let limit = std::time::Duration::from_secs(20);
    let mut all = vec!["rpc", "--url", url, "--connections", "2"];
    all.extend_from_slice(args);
    let all: Vec<String> = all.iter().map(|a| a.to_string()).collect();
    let run = tokio::task::spawn_blocking(move || {
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        bench(&all)
    });
    tokio::time::timeout(limit, run)
        .await
        .unwrap_or_else(|_| panic!("helios-bench rpc {args:?} still running after {limit:?}"))
        .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_closed_and_open_loop_report_answered_requests() {
    let (url, stop) = start_server().await;
    let window = ["--duration-secs", "1", "--warmup-secs", "0.2"];
    let closed = rpc(&url, &[&["--depth", "2"][..], &window].concat()).await;
    assert_eq!(closed["mode"], "rpc-closed-loop");
    assert!(
        closed["requests"].as_u64().expect("requests") > 0,
        "{closed}"
    );
    assert_eq!(closed["errors"], 0, "{closed}");
    assert!(closed["latency_us"]["count"].as_u64().expect("count") > 0);

    for pacing in ["spin", "sleep"] {
        let args = [&["--rate", "200", "--pacing", pacing][..], &window].concat();
        let open = rpc(&url, &args).await;
        assert_eq!(open["mode"], "rpc-open-loop");
        // The schedule is exact: 200 req/s over the 1 s window is 200
        // requests, each answered (3 s of drain at this rate).
        assert_eq!(open["requests"], 200, "{pacing}: {open}");
        assert_eq!(open["unanswered"], 0, "{pacing}: {open}");
        assert_eq!(open["schedule_lag_us"]["count"], 200, "{pacing}: {open}");
        assert_eq!(open["generator_dropped"], 0, "{pacing}: {open}");
        assert_eq!(open["pacing"], pacing, "{open}");
    }
    let _ = stop.send(());
}

/// A server that completes the upgrade and then never reads: the socket
/// fills, and the generator must still end on time and report what went
/// unanswered, for both pacings and the closed loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_reading_does_not_hold_the_run() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let url = format!("ws://{}/ws", listener.local_addr().expect("local addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok((_req, ws)) = tokio_websockets::ServerBuilder::new().accept(tcp).await {
                held.push(ws);
            }
        }
    });
    let common = [
        "--duration-secs",
        "0.5",
        "--warmup-secs",
        "0",
        "--payload-bytes",
        "16000",
    ];
    let runs: [&[&str]; 3] = [
        &["--rate", "50000", "--pacing", "spin"],
        &["--rate", "50000", "--pacing", "sleep"],
        &["--depth", "64"],
    ];
    for extra in runs {
        // The run's own bound is its window, 3 s of drain and 1 s to close.
        let report = rpc(&url, &[extra, &common].concat()).await;
        assert_eq!(report["requests"], 0, "{extra:?}: {report}");
        let count = |key: &str| report[key].as_u64().unwrap_or(0);
        assert!(count("unanswered") > 0, "{extra:?}: {report}");
        if report["mode"] == "rpc-open-loop" {
            // Nothing vanishes: what was not written is counted too.
            // 50,000 req/s over 0.5 s is 25,000 requests.
            let accounted = count("errors") + count("unanswered") + count("generator_dropped");
            assert_eq!(accounted, 25_000, "{extra:?}: {report}");
        }
    }
}
