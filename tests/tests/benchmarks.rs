//! Each `lwm2m-client-sim bench` benchmark once at a tiny size, so that none of them rots:
//! the run succeeds, loses nothing, and prints the figures BENCHMARKS.md quotes. The
//! figures themselves are not judged here (a shared machine's speed is no test).
//! `bench scale` runs in `fleet.rs`.

mod http_support;

use std::process::{Command, Stdio};

use http_support::*;

/// Runs `lwm2m-client-sim bench ARGS` and answers its stdout, asserting it succeeded.
fn bench(args: &[&str]) -> String {
    let out = Command::new(binary("lwm2m-client-sim"))
        .arg("bench")
        .args(args)
        .arg("--server-binary")
        .arg(server_binary())
        .stderr(Stdio::null())
        .output()
        .expect("run the benchmark");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "bench {args:?} failed: {text}");
    text
}

/// The value of `key=` in `text`.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.split_whitespace()
        .find_map(|p| p.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {text}"))
}

#[test]
fn the_rate_benchmark_runs_at_a_tiny_size() {
    let text = bench(&["rate", "--count", "300", "--window", "16", "--devices", "5"]);
    for (key, want) in [
        ("echo_done", "300"),
        ("echo_after_done", "300"),
        ("register_done", "300"),
        ("register_lost", "0"),
        ("update_done", "300"),
        ("update_lost", "0"),
        ("bare_done", "300"),
        ("server_done", "300"),
        ("server_lost", "0"),
    ] {
        assert_eq!(field(&text, key), want, "{key} in {text}");
    }
    for ratio in ["register_ratio", "update_ratio", "read_ratio"] {
        let r: f64 = field(&text, ratio).parse().expect("a number");
        assert!(r > 0.0, "{ratio} in {text}");
    }
}

#[test]
fn the_latency_benchmark_runs_at_a_tiny_size() {
    let text = bench(&[
        "latency",
        "--count",
        "300",
        "--window",
        "8",
        "--devices",
        "5",
    ]);
    assert_eq!(field(&text, "server_done"), "300", "{text}");
    assert_eq!(field(&text, "server_lost"), "0", "{text}");
    let p50: f64 = field(&text, "server_p50_ms").parse().expect("a number");
    let p99: f64 = field(&text, "server_p99_ms").parse().expect("a number");
    assert!(p50 > 0.0 && p99 >= p50, "{text}");
}

#[test]
fn the_herd_benchmark_runs_at_a_tiny_size() {
    let text = bench(&["herd", "--count", "200", "--within", "1"]);
    assert_eq!(field(&text, "listed"), "200", "{text}");
    assert_eq!(field(&text, "herd_done"), "200", "{text}");
    assert_eq!(field(&text, "herd_lost"), "0", "{text}");
    assert_eq!(field(&text, "api_herd_lost"), "0", "{text}");
}
