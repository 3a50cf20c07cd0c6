//! X.509 over DTLS against the real binary: a device certificate that chains to the
//! server's trust store registers as the endpoint its common name says, and only as that
//! one; a certificate from another CA never completes the handshake. Certificates are
//! made for the test (EC P-256, as LwM2M's certificate suites use).

mod http_support;

use std::path::Path;
use std::time::Duration;

use http_support::*;
use lwm2m_client_sim::{CertificateCredentials, Client, Config as ClientConfig};
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::BasicConstraints;
use openssl::x509::{X509Name, X509};
use reqwest::{Method, StatusCode};

fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey")
}

/// A certificate for `cn`, signed by `issuer` (self-signed, as a CA, when `None`).
fn certificate(cn: &str, key: &PKey<Private>, issuer: Option<(&X509, &PKey<Private>)>) -> X509 {
    let mut name = X509Name::builder().expect("name");
    name.append_entry_by_nid(Nid::COMMONNAME, cn).expect("cn");
    let name = name.build();
    let mut b = X509::builder().expect("builder");
    b.set_version(2).expect("v3");
    let serial = BigNum::from_u32(rand_serial()).and_then(|n| n.to_asn1_integer());
    b.set_serial_number(&serial.expect("serial"))
        .expect("serial");
    b.set_subject_name(&name).expect("subject");
    b.set_pubkey(key).expect("pubkey");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("t"))
        .expect("nb");
    b.set_not_after(&Asn1Time::days_from_now(2).expect("t"))
        .expect("na");
    match issuer {
        None => {
            b.set_issuer_name(&name).expect("issuer");
            b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
                .expect("ext");
            b.sign(key, MessageDigest::sha256()).expect("sign");
        }
        Some((ca, ca_key)) => {
            b.set_issuer_name(ca.subject_name()).expect("issuer");
            b.sign(ca_key, MessageDigest::sha256()).expect("sign");
        }
    }
    b.build()
}

fn rand_serial() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

fn pem(c: &X509) -> Vec<u8> {
    c.to_pem().expect("pem")
}

fn key_pem(k: &PKey<Private>) -> Vec<u8> {
    k.private_key_to_pem_pkcs8().expect("pem")
}

struct Pki {
    ca: X509,
    ca_key: PKey<Private>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let ca_key = key();
        let ca = certificate(name, &ca_key, None);
        Pki { ca, ca_key }
    }

    fn issue(&self, cn: &str) -> (X509, PKey<Private>) {
        let k = key();
        (certificate(cn, &k, Some((&self.ca, &self.ca_key))), k)
    }
}

fn device(
    server: std::net::SocketAddr,
    endpoint: &str,
    pki: &Pki,
    cn: &str,
    server_ca: &X509,
) -> ClientConfig {
    let (cert, k) = pki.issue(cn);
    let mut c = ClientConfig::new(server, endpoint);
    c.certificate = Some(CertificateCredentials {
        chain_pem: pem(&cert),
        key_pem: key_pem(&k),
        ca_pem: pem(server_ca),
    });
    c.coap.ack_timeout = Duration::from_millis(500);
    c.registration_retry = Duration::from_millis(500);
    c
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p.to_str().expect("utf-8").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_with_certificates_register_as_their_common_name_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = Pki::new("fleet CA");
    let stranger = Pki::new("someone else's CA");
    let (server_cert, server_key) = fleet.issue("lwm2m-server");
    let cert = write(dir.path(), "server.pem", &pem(&server_cert));
    let skey = write(dir.path(), "server.key", &key_pem(&server_key));
    let trust = write(dir.path(), "fleet-ca.pem", &pem(&fleet.ca));
    let cfg = write(
        dir.path(),
        "server.toml",
        format!(
            "[dtls]\ncertificate = {cert:?}\nprivate_key = {skey:?}\ntrust_store = {trust:?}\n\
             initial_retransmit_ms = 200\n"
        )
        .as_bytes(),
    );
    let srv = start(
        &dir.path().join("data"),
        &["--config", &cfg, "--api-token", ADMIN],
        &[],
    );
    let api = Api::new(srv.http);
    let mut events = api.events("ep=x509-dev", ADMIN).await;

    let dev = Client::start(device(srv.coaps, "x509-dev", &fleet, "x509-dev", &fleet.ca))
        .await
        .expect("device");
    dev.wait_registered(STEP)
        .await
        .expect("registers with its certificate");
    wait_event(&mut events, "REGISTRATION", |_| true).await;
    let read = api
        .ok(
            Method::GET,
            "/api/clients/{endpoint}/{path}",
            &[("endpoint", "x509-dev"), ("path", "3/0/0")],
            "",
            Body::None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(read["content"]["type"], "STRING");

    // A trusted certificate for another name may not register as this endpoint.
    let other = Client::start(device(
        srv.coaps,
        "x509-dev",
        &fleet,
        "x509-other",
        &fleet.ca,
    ))
    .await
    .expect("device");
    assert!(other.wait_registered(Duration::from_secs(3)).await.is_err());
    other.shutdown().await.ok();
    // A certificate of another CA never gets through the handshake.
    let outsider = Client::start(device(
        srv.coaps, "x509-out", &stranger, "x509-out", &fleet.ca,
    ))
    .await
    .expect("device");
    assert!(outsider
        .wait_registered(Duration::from_secs(3))
        .await
        .is_err());
    outsider.shutdown().await.ok();
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
    // Credentials of an endpoint say which modes it may use: with a PSK only, its own
    // certificate is refused; once they allow a certificate, the same device gets in
    // (it retries its Register on the same session); plain CoAP stays closed to it.
    let sec = "/api/security/clients/{endpoint}";
    let psk_only = serde_json::json!({ "psk": { "identity": "locked-id", "key": "00112233445566778899aabbccddeeff" } });
    api.ok(
        Method::PUT,
        sec,
        &[("endpoint", "x509-locked")],
        "",
        Body::Json(psk_only),
        StatusCode::OK,
    )
    .await;
    let locked = Client::start(device(
        srv.coaps,
        "x509-locked",
        &fleet,
        "x509-locked",
        &fleet.ca,
    ))
    .await
    .expect("device");
    assert!(locked
        .wait_registered(Duration::from_secs(2))
        .await
        .is_err());
    let both = serde_json::json!({ "psk": { "identity": "locked-id", "key": "00112233445566778899aabbccddeeff" }, "x509": true });
    let shown = api
        .ok(
            Method::PUT,
            sec,
            &[("endpoint", "x509-locked")],
            "",
            Body::Json(both),
            StatusCode::OK,
        )
        .await;
    assert_eq!(shown["x509"], true);
    locked
        .wait_registered(STEP)
        .await
        .expect("allowed a certificate now");
    locked.shutdown().await.ok();
    let mut plain = ClientConfig::new(srv.coap, "x509-locked");
    plain.registration_retry = Duration::from_millis(500);
    let plain = Client::start(plain).await.expect("device");
    assert!(plain.wait_registered(Duration::from_secs(2)).await.is_err());
    plain.shutdown().await.ok();

    // PSK devices are served on the same port beside the certificates.
    api.set_psk("psk-dev", "psk-id", "00112233445566778899aabbccddeeff")
        .await;
    let mut c = ClientConfig::new(srv.coaps, "psk-dev");
    c.psk = Some(lwm2m_client_sim::Psk {
        identity: b"psk-id".to_vec(),
        key: (0u8..16).map(|i| i * 0x11).collect(),
    });
    c.coap.ack_timeout = Duration::from_millis(500);
    let psk = Client::start(c).await.expect("device");
    psk.wait_registered(STEP)
        .await
        .expect("a PSK device registers too");
    psk.shutdown().await.ok();
    dev.shutdown().await.ok();

    // A certificate without its key is refused at start.
    let bad = write(
        dir.path(),
        "bad.toml",
        format!("[dtls]\ncertificate = {cert:?}\n").as_bytes(),
    );
    let out = std::process::Command::new(server_binary())
        .args([
            "--coap",
            "127.0.0.1:0",
            "--coaps",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .args(["--config", &bad, "--api-token", ADMIN, "--data-dir"])
        .arg(dir.path().join("bad"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("private key"),
        "{out:?}"
    );
}
