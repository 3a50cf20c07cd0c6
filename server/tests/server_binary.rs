//! The real `lwm2m-server` binary on an ephemeral port, driven by a hand-built CoAP client:
//! the registration interface's answers, persistence across SIGKILL, and lifetime expiry.

mod server_support;

use std::time::{Duration, Instant};

use coap_lite::{CoapOption, RequestType};
use server_support::{code, location, register, request, start, Client};

fn update_path(loc: &[String]) -> Vec<&str> {
    loc.iter().map(String::as_str).collect()
}

#[test]
fn register_update_deregister_and_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), None);
    let mut c = Client::new(server.addr);

    let r = c.call(register("dev-1", 60, &[]));
    assert_eq!(code(&r), "2.01");
    let loc = location(&r);
    assert_eq!(loc.len(), 2, "Location-Path rd/{{id}}: {loc:?}");
    assert_eq!(loc[0], "rd");
    assert!(!loc[1].is_empty());

    let r = c.call(request(
        RequestType::Post,
        &update_path(&loc),
        &["lt=120"],
        b"",
    ));
    assert_eq!(code(&r), "2.04");

    let r = c.call(request(RequestType::Post, &["rd"], &["lt=60"], b""));
    assert_eq!(code(&r), "4.00");
    assert!(
        String::from_utf8_lossy(&r.payload).contains("ep"),
        "diagnostic names the missing parameter: {:?}",
        String::from_utf8_lossy(&r.payload)
    );
    assert_eq!(
        r.get_first_option(CoapOption::ContentFormat),
        Some(&Vec::new()),
        "diagnostic is text/plain"
    );

    let r = c.call(request(
        RequestType::Post,
        &["rd"],
        &["ep=x", "lwm2m=2.0"],
        b"",
    ));
    assert_eq!(code(&r), "4.12");

    let r = c.call(request(RequestType::Get, &["nothing"], &[], b""));
    assert_eq!(code(&r), "4.04");

    let r = c.call(request(RequestType::Delete, &update_path(&loc), &[], b""));
    assert_eq!(code(&r), "2.02");
    let r = c.call(request(RequestType::Post, &update_path(&loc), &[], b""));
    assert_eq!(
        code(&r),
        "4.04",
        "the registration is gone after De-register"
    );
}

#[test]
fn registration_survives_sigkill_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loc = {
        let mut server = start(dir.path(), None);
        let mut c = Client::new(server.addr);
        let r = c.call(register("survivor", 300, &[]));
        assert_eq!(code(&r), "2.01");
        server.child.kill().expect("SIGKILL");
        let _ = server.child.wait();
        location(&r)
    };
    let server = start(dir.path(), None);
    let mut c = Client::new(server.addr);
    let r = c.call(request(RequestType::Post, &update_path(&loc), &[], b""));
    assert_eq!(
        code(&r),
        "2.04",
        "the registration made before SIGKILL still holds"
    );
    // Control: an id that never existed is refused, so the 2.04 above means something.
    let r = c.call(request(
        RequestType::Post,
        &["rd", "AAAAAAAAAAAA"],
        &[],
        b"",
    ));
    assert_eq!(code(&r), "4.04");
}

#[test]
fn lifetime_expiry_ends_the_registration_also_across_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "[registry]\nexpiry_grace_ms = 0\n").expect("config");
    let data = dir.path().join("data");
    let mut server = start(&data, Some(&config));
    let mut c = Client::new(server.addr);
    let r = c.call(register("short-lived", 2, &[]));
    assert_eq!(code(&r), "2.01");
    let loc = location(&r);
    let r = c.call(request(RequestType::Post, &update_path(&loc), &[], b""));
    assert_eq!(code(&r), "2.04", "alive within its lifetime");
    let refreshed = Instant::now();
    // Waiting for time to pass is the point here: lt=2 must have run out. (Any probe
    // would refresh it; the in-process tests observe the expiry event itself.)
    std::thread::sleep(Duration::from_millis(2_300).saturating_sub(refreshed.elapsed()));
    let r = c.call(request(RequestType::Post, &update_path(&loc), &[], b""));
    assert_eq!(code(&r), "4.04", "expired after lt=2");
    // The expiry timer deleted it from the store: after a restart it is still gone.
    server.child.kill().expect("SIGKILL");
    let _ = server.child.wait();
    let server = start(&data, Some(&config));
    let mut c = Client::new(server.addr);
    let r = c.call(request(RequestType::Post, &update_path(&loc), &[], b""));
    assert_eq!(code(&r), "4.04");
}
