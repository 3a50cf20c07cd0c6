//! The package store and the download endpoints through the binary, without a device:
//! uploads are hashed, stored once per content, bounded, and leave nothing behind when
//! refused or cut short; download tokens nobody issued get 4.04 over CoAP and 404 over
//! HTTP, and are counted.

mod http_support;

use std::io::Write;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use http_support::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const PACKAGES: &str = "/api/packages";
const ONE: &str = "/api/packages/{id}";

fn start_small(dir: &std::path::Path) -> Running {
    let cfg = dir.join("server.toml");
    std::fs::write(&cfg, "[firmware]\nmax_package_size = 4096\n").expect("config");
    start(
        &dir.join("data"),
        &[
            "--config",
            cfg.to_str().expect("utf-8"),
            "--api-token",
            ADMIN,
        ],
        &[],
    )
}

fn package_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("data").join("packages"))
        .expect("packages dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn upload(api: &Api, query: &str, bytes: Vec<u8>, expect: StatusCode) -> Value {
    api.ok(
        Method::POST,
        PACKAGES,
        &[],
        query,
        Body::Octets(bytes),
        expect,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_are_stored_once_by_content_and_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_small(dir.path());
    let api = Api::new(srv.http);
    let bytes: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let sha = lwm2m_server::hex::encode(&openssl::sha::sha256(&bytes));
    let a = upload(
        &api,
        "name=tracker-fw&version=2.0.1&models=T1,T2&tags=beta",
        bytes.clone(),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(
        (a["sha256"].clone(), a["size"].clone()),
        (json!(sha), json!(3000))
    );
    assert_eq!(a["models"], json!(["T1", "T2"]));
    let b = upload(
        &api,
        "name=same-bytes&version=2.0.1",
        bytes.clone(),
        StatusCode::CREATED,
    )
    .await;
    assert_ne!(a["id"], b["id"]);
    assert_eq!(
        package_files(dir.path()),
        vec![sha.clone()],
        "one file for one content"
    );

    // Refusals store nothing.
    let too_big = upload(
        &api,
        "name=x&version=1",
        vec![1; 4097],
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(too_big["error"], "body_too_large");
    let no_version = upload(&api, "name=x", vec![1; 10], StatusCode::BAD_REQUEST).await;
    assert_eq!(no_version["error"], "bad_query");
    let empty = upload(
        &api,
        "name=x&version=1",
        Vec::new(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(empty["error"], "bad_body");
    // An upload cut short: the connection closes before the announced length arrived.
    {
        let mut s = std::net::TcpStream::connect(srv.http).expect("connect");
        write!(
            s,
            "POST /api/packages?name=cut&version=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: 3000\r\n\r\n"
        )
        .expect("head");
        s.write_all(&[9u8; 1000]).expect("part of the body");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let list = api
        .ok(Method::GET, PACKAGES, &[], "", Body::None, StatusCode::OK)
        .await;
    assert_eq!(list["packages"].as_array().map(Vec::len), Some(2), "{list}");
    assert_eq!(
        package_files(dir.path()),
        vec![sha.clone()],
        "nothing left of the refused uploads"
    );

    let id = a["id"].as_str().expect("id");
    let got = api
        .ok(
            Method::GET,
            ONE,
            &[("id", id)],
            "",
            Body::None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(got, a);
    // Deleting one of two packages with the same bytes keeps the file; the second removes it.
    api.ok(
        Method::DELETE,
        ONE,
        &[("id", id)],
        "",
        Body::None,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_eq!(package_files(dir.path()), [sha]);
    let other = b["id"].as_str().expect("id");
    api.ok(
        Method::DELETE,
        ONE,
        &[("id", other)],
        "",
        Body::None,
        StatusCode::NO_CONTENT,
    )
    .await;
    assert!(package_files(dir.path()).is_empty());
    let gone = api
        .ok(
            Method::GET,
            ONE,
            &[("id", id)],
            "",
            Body::None,
            StatusCode::NOT_FOUND,
        )
        .await;
    assert_eq!(gone["error"], "unknown_package");

    // A package survives SIGKILL.
    let c = upload(
        &api,
        "name=keep&version=3",
        vec![5; 100],
        StatusCode::CREATED,
    )
    .await;
    drop(srv);
    let srv = start_small(dir.path());
    let api = Api::new(srv.http);
    let list = api
        .ok(Method::GET, PACKAGES, &[], "", Body::None, StatusCode::OK)
        .await;
    assert_eq!(list["packages"], json!([c]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_download_tokens_get_not_found_and_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let srv = start_small(dir.path());
    let api = Api::new(srv.http);
    let token = "0123456789abcdef0123456789abcdef";
    let r = api
        .http
        .get(format!("{}/fw/{token}", api.base))
        .header("range", "bytes=0-9")
        .send()
        .await
        .expect("http");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    for (i, path) in [token, "not-a-token"].into_iter().enumerate() {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(RequestType::Get);
        p.header.message_id = 100 + i as u16;
        p.set_token(vec![7, i as u8]);
        p.add_option(CoapOption::UriPath, b"fw".to_vec());
        p.add_option(CoapOption::UriPath, path.as_bytes().to_vec());
        socket
            .send_to(&p.to_bytes().expect("encode"), srv.coap)
            .await
            .expect("send");
        let mut buf = [0u8; 1500];
        let (n, _) = tokio::time::timeout(STEP, socket.recv_from(&mut buf))
            .await
            .expect("answer")
            .expect("recv");
        let answer = Packet::from_bytes(&buf[..n]).expect("coap");
        assert_eq!(
            answer.header.code,
            MessageClass::Response(ResponseType::NotFound)
        );
    }
    let metrics = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("lwm2m_firmware_downloads_total{outcome=\"unknown\"} 3"),
        "{metrics}"
    );
}
