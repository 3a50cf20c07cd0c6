//! The `lwm2m-client-sim` binary registers, and de-registers on SIGINT.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use coap_lite::RequestType;
use support::TestServer;

#[tokio::test]
async fn binary_registers_and_deregisters_on_sigint() {
    let mut server = TestServer::start().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_lwm2m-client-sim"))
        .args([
            "--server",
            &format!("coap://{}", server.addr),
            "--endpoint",
            "bin-1",
            "--lifetime",
            "120",
            "--lwm2m",
            "1.2",
            "--format",
            "lwm2m-cbor",
            "--queue-mode",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let reg = server
        .wait_for(Duration::from_secs(10), |s| s.path() == "/rd")
        .await;
    let pid = child.id().to_string();
    let reg = match reg {
        Some(r) => r,
        None => {
            let _ = child.kill();
            panic!("binary did not register");
        }
    };
    let q = reg.queries();
    for want in ["ep=bin-1", "lt=120", "lwm2m=1.2", "b=U", "Q"] {
        assert!(q.contains(&want.to_string()), "{want} missing in {q:?}");
    }
    let status = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let del = server
        .wait_for(Duration::from_secs(10), |s| {
            s.method() == Some(RequestType::Delete)
        })
        .await;
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap();
    assert!(del.is_some(), "no De-register after SIGINT");
    assert!(exit.expect("wait").success());
}

#[test]
fn binary_rejects_bad_arguments() {
    let out = Command::new(env!("CARGO_BIN_EXE_lwm2m-client-sim"))
        .args(["--server", "http://x", "--endpoint", "e"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("coap://"));
}
