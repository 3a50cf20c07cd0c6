//! `lwm2m-client-sim bench campaign` once at a tiny size, so that it does not rot: both
//! runs (naive and scheduled) happen on their fresh servers, print the figures the
//! benchmark promises in a form that parses, and the scheduled campaign updates every
//! eligible device. Speed is the benchmark's to measure, not this test's to judge: no
//! ratio is asserted.

mod http_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http_support::*;

/// The shipped mix, with sleeps of a few seconds instead of tens, so that every
/// queue-mode device wakes several times within the test's limit.
fn quick_profile(dir: &std::path::Path) -> std::path::PathBuf {
    let shipped = include_str!("../../client-sim/profiles/campaign-bench.toml");
    let mut text = String::new();
    for line in shipped.lines() {
        if line.starts_with("sleep_s = ") {
            text.push_str("sleep_s = 4\n");
        } else {
            text.push_str(line);
            text.push('\n');
        }
    }
    assert!(text.matches("sleep_s = 4").count() >= 3, "{text}");
    let path = dir.join("campaign-bench-quick.toml");
    std::fs::write(&path, text).expect("profile");
    path
}

/// The value of `key=` in `line`.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|p| p.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

fn number(line: &str, key: &str) -> f64 {
    let v = field(line, key);
    v.parse()
        .unwrap_or_else(|_| panic!("{key}={v} is not a number in {line}"))
}

/// A time, or `none` when the share was never reached.
fn time(line: &str, key: &str) -> Option<f64> {
    match field(line, key) {
        "none" => None,
        v => Some(
            v.parse()
                .unwrap_or_else(|_| panic!("{key}={v} is not a time in {line}")),
        ),
    }
}

#[test]
fn the_campaign_benchmark_runs_at_a_tiny_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = quick_profile(dir.path());
    let mut child = Command::new(binary("lwm2m-client-sim"))
        .args(["bench", "campaign", "--count", "60", "--cells", "3"])
        .args(["--package-kib", "8", "--limit-s", "60", "--cell-scale", "1"])
        .arg("--profile")
        .arg(&profile)
        .arg("--server-binary")
        .arg(server_binary())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the benchmark");
    // Both runs end by their limit (60 s each) plus setting up; bounded at 200 s.
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(200) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the benchmark did not end within 200 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut text = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut text)
        .expect("read");
    assert!(status.success(), "the benchmark failed: {text}");

    let line = |run: &str| -> &str {
        text.lines()
            .find(|l| l.starts_with(&format!("bench campaign run={run} ")))
            .unwrap_or_else(|| panic!("no line of the {run} run in {text}"))
    };
    for run in ["naive", "scheduled"] {
        let l = line(run);
        assert_eq!(field(l, "devices"), "60", "{l}");
        assert_eq!(field(l, "cells"), "3", "{l}");
        let eligible = number(l, "eligible");
        assert!((1.0..=60.0).contains(&eligible), "{l}");
        for key in [
            "updated",
            "succeeded",
            "failed_downloads",
            "retries",
            "bytes_sent",
            "bytes_wasted",
            "wasted_share",
            "elapsed_s",
            "cell_peak_max",
        ] {
            assert!(number(l, key) >= 0.0, "{key} in {l}");
        }
        assert!(number(l, "bytes_wasted") <= number(l, "bytes_sent"), "{l}");
        let (t95, t100) = (time(l, "t95_s"), time(l, "t100_s"));
        if let (Some(a), Some(b)) = (t95, t100) {
            assert!(a <= b, "{l}");
        }
        time(l, "t95_server_s");
        time(l, "t100_server_s");
    }

    // The scheduled campaign finished every eligible device.
    let s = line("scheduled");
    assert!(
        ["complete", "completed"].contains(&field(s, "status")),
        "{s}"
    );
    assert_eq!(number(s, "updated"), number(s, "eligible"), "{s}");
    assert!(time(s, "t100_s").is_some(), "{s}");
    assert!(number(s, "cell_cap_min") >= 1.0, "{s}");
    number(s, "cells_over_cap");

    let ratio = text
        .lines()
        .find(|l| l.starts_with("bench campaign speedup_100="))
        .unwrap_or_else(|| panic!("no ratio line in {text}"));
    assert!(number(ratio, "speedup_100") >= 0.0, "{ratio}");
    assert_eq!(field(ratio, "scheduled_complete"), "true", "{ratio}");
    assert!(
        ["true", "false"].contains(&field(ratio, "target_met")),
        "{ratio}"
    );
}
