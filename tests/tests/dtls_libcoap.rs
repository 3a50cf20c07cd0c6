//! DTLS-PSK against a third-party peer: Debian's `coap-client-openssl` (package
//! `libcoap3-bin`) registers over DTLS with credentials set through the HTTP API. A wrong
//! key never gets an answer, a DTLS identity may not register as another endpoint (4.00, as T12 has it),
//! an endpoint with credentials may not register over plain CoAP (4.03), and credentials
//! loaded in bulk from a file at start work the same. Skipped where the tool is missing
//! on a developer machine; under CI (`CI` set) a missing tool is a failure.

mod http_support;

use std::process::Command;

use http_support::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

const TOOL: &str = "coap-client-openssl";
/// libcoap 4.3 takes the key as text: its bytes are the PSK.
const KEY_TEXT: &str = "secretkey-0001!!";

fn key_hex(text: &str) -> String {
    lwm2m_server::hex::encode(text.as_bytes())
}

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

/// One confirmable POST to /rd; gives back libcoap's verbose output. `-B 5` bounds it.
fn register(uri: &str, identity: Option<(&str, &str)>) -> String {
    let mut cmd = Command::new(if identity.is_some() {
        TOOL
    } else {
        "coap-client-notls"
    });
    cmd.args([
        "-v",
        "6",
        "-B",
        "5",
        "-m",
        "post",
        "-t",
        "40",
        "-e",
        "</1/0>,</3/0>",
    ]);
    if let Some((id, key)) = identity {
        cmd.args(["-u", id, "-k", key]);
    }
    let out = cmd.arg(uri).output().expect("run libcoap");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn answer(out: &str) -> Option<&str> {
    out.lines().find(|l| l.contains("t:ACK"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libcoap_registers_over_dtls_psk_with_credentials_from_the_api() {
    if !tool_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start(&dir.path().join("data"), &["--api-token", ADMIN], &[]);
    let api = Api::new(srv.http);
    api.set_psk("libcoap-dtls", "libcoap-id", &key_hex(KEY_TEXT))
        .await;
    let coaps = srv.coaps;
    let rd = |ep: &str| format!("coaps://{coaps}/rd?ep={ep}&lt=60&lwm2m=1.1");

    let out = register(&rd("libcoap-dtls"), Some(("libcoap-id", KEY_TEXT)));
    let ack = answer(&out).unwrap_or_else(|| panic!("no answer over DTLS:\n{out}"));
    assert!(ack.contains("c:2.01"), "{ack}");
    let client = api
        .ok(
            Method::GET,
            "/api/clients/{endpoint}",
            &[("endpoint", "libcoap-dtls")],
            "",
            Body::None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(client["transport"], "dtls");

    // The right identity, the wrong key: the handshake never completes, no answer.
    let out = register(
        &rd("libcoap-dtls"),
        Some(("libcoap-id", "not-the-key-0000")),
    );
    assert!(answer(&out).is_none(), "a wrong key got an answer:\n{out}");

    // Authenticated, but as another endpoint's identity.
    let out = register(&rd("someone-else"), Some(("libcoap-id", KEY_TEXT)));
    let ack = answer(&out).unwrap_or_else(|| panic!("no answer:\n{out}"));
    assert!(ack.contains("c:4.00"), "{ack}");

    // An endpoint with credentials may not use plain CoAP.
    let plain = format!("coap://{}/rd?ep=libcoap-dtls&lt=60", srv.coap);
    let out = register(&plain, None);
    let ack = answer(&out).unwrap_or_else(|| panic!("no answer:\n{out}"));
    assert!(ack.contains("c:4.03"), "{ack}");
    assert!(out.contains("use DTLS"), "{out}");

    // Nothing of the refused attempts registered anything.
    let list = api
        .ok(
            Method::GET,
            "/api/clients",
            &[],
            "",
            Body::None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(list["total"], 1, "{list}");
    drop(srv);

    // Credentials in bulk from a file at start; a bad file stops the server.
    let file = dir.path().join("credentials.json");
    std::fs::write(
        &file,
        json!([{ "endpoint": "bulk-1", "psk": { "identity": "bulk-id-1", "key": key_hex(KEY_TEXT) } }])
            .to_string(),
    )
    .expect("write");
    let file_arg = file.to_str().expect("utf-8");
    let srv = start(
        &dir.path().join("bulk"),
        &["--api-token", ADMIN, "--security-file", file_arg],
        &[],
    );
    let out = register(
        &format!("coaps://{}/rd?ep=bulk-1&lt=60", srv.coaps),
        Some(("bulk-id-1", KEY_TEXT)),
    );
    let ack = answer(&out).unwrap_or_else(|| panic!("no answer over DTLS:\n{out}"));
    assert!(ack.contains("c:2.01"), "{ack}");
    drop(srv);
    std::fs::write(
        &file,
        r#"[{"endpoint": "bulk-1", "psk": {"identity": "x", "key": "00"}}]"#,
    )
    .expect("write");
    let out = std::process::Command::new(server_binary())
        .args([
            "--coap",
            "127.0.0.1:0",
            "--coaps",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .args([
            "--api-token",
            ADMIN,
            "--security-file",
            file_arg,
            "--data-dir",
        ])
        .arg(dir.path().join("bad"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("psk.key"));
}
