//! Our first third-party peer: Debian's libcoap command-line client (`coap-client-notls`,
//! package `libcoap3-bin`) registers by hand against the binary. Skipped when the tool is
//! missing on a developer machine; under CI (`CI` set) a missing tool is a failure, since
//! `.ci/run` installs it.

mod server_support;

use std::process::Command;

const TOOL: &str = "coap-client-notls";

fn tool_available() -> bool {
    let found = Command::new(TOOL).arg("-h").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{TOOL} is not installed but CI is set: .ci/run must `apt-get install -y libcoap3-bin`"
        );
        eprintln!("skipping: {TOOL} not found (apt-get install libcoap3-bin)");
    }
    found
}

/// Runs the client with verbose output (every message it sends and receives, as text)
/// and gives back stdout and stderr together.
fn coap_client(args: &[&str]) -> String {
    let out = Command::new(TOOL)
        .args(["-v", "6", "-B", "10"])
        .args(args)
        .output()
        .expect("run coap-client-notls");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn libcoap_registers_and_malformed_registrations_get_4_00() {
    if !tool_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server_support::start(dir.path(), None);
    let port = server.addr.port();

    let uri = format!("coap://127.0.0.1:{port}/rd?ep=libcoap-1&lt=60&lwm2m=1.1");
    let out = coap_client(&["-m", "post", "-t", "40", "-e", "</1/0>,</3/0>", &uri]);
    let ack = out
        .lines()
        .find(|l| l.contains("t:ACK"))
        .unwrap_or_else(|| panic!("no ACK in libcoap's output:\n{out}"));
    assert!(ack.contains("c:2.01"), "expected 2.01 Created: {ack}");
    assert!(
        ack.contains("Location-Path:rd, Location-Path:"),
        "expected Location-Path rd/{{id}}: {ack}"
    );

    for bad in [
        format!("coap://127.0.0.1:{port}/rd?lt=60&lwm2m=1.1"),
        format!("coap://127.0.0.1:{port}/rd?ep=x&lt=soon"),
    ] {
        let out = coap_client(&["-m", "post", "-t", "40", "-e", "</3/0>", &bad]);
        let ack = out
            .lines()
            .find(|l| l.contains("t:ACK"))
            .unwrap_or_else(|| panic!("no ACK for {bad}:\n{out}"));
        assert!(ack.contains("c:4.00"), "expected 4.00 for {bad}: {ack}");
        assert!(ack.contains("text/plain"), "diagnostic payload: {ack}");
    }
}
