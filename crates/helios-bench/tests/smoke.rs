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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_closed_and_open_loop_report_answered_requests() {
    let (url, stop) = start_server().await;
    let closed = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            bench(&[
                "rpc",
                "--url",
                &url,
                "--connections",
                "2",
                "--depth",
                "2",
                "--duration-secs",
                "1",
                "--warmup-secs",
                "0.2",
            ])
        }
    })
    .await
    .expect("join");
    assert_eq!(closed["mode"], "rpc-closed-loop");
    assert!(
        closed["requests"].as_u64().expect("requests") > 0,
        "{closed}"
    );
    assert_eq!(closed["errors"], 0, "{closed}");
    assert!(closed["latency_us"]["count"].as_u64().expect("count") > 0);

    for pacing in ["spin", "sleep"] {
        let url = url.clone();
        let open = tokio::task::spawn_blocking(move || {
            bench(&[
                "rpc",
                "--url",
                &url,
                "--connections",
                "2",
                "--rate",
                "200",
                "--duration-secs",
                "1",
                "--warmup-secs",
                "0.2",
                "--pacing",
                pacing,
            ])
        })
        .await
        .expect("join");
        assert_eq!(open["mode"], "rpc-open-loop");
        // The schedule is exact: 200 req/s over the 1 s window is 200
        // requests, each answered (3 s of drain at this rate).
        assert_eq!(open["requests"], 200, "{pacing}: {open}");
        assert_eq!(open["unanswered"], 0, "{pacing}: {open}");
        assert_eq!(open["schedule_lag_us"]["count"], 200, "{pacing}: {open}");
    }
    let _ = stop.send(());
}
