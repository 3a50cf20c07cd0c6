//! `lwm2m-client-sim`: runs one simulated LwM2M device against a server until
//! Ctrl-C, then de-registers.

use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::Duration;

use lwm2m_client_sim::{Client, ClientEvent, Config};
use lwm2m_objects::{ContentFormat, Version};

const USAGE: &str = "usage: lwm2m-client-sim --server coap[s]://HOST:PORT --endpoint NAME \
[--lifetime S] [--queue-mode] [--awake S] [--lwm2m 1.0|1.1|1.2] \
[--format senml-cbor|senml-json|tlv|lwm2m-cbor] [--psk-identity ID --psk-key HEX] \
[--cert PEM --key PEM --ca PEM]";

fn parse_args(args: &[String]) -> Result<Config, String> {
    let mut server = None;
    let mut endpoint = None;
    let mut lifetime = None;
    let mut queue = false;
    let mut awake = None;
    let mut version = Version::V1_1;
    let mut format = ContentFormat::SenmlCbor;
    let mut psk_identity = None;
    let mut psk_key = None;
    let (mut cert, mut key, mut ca) = (None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--server" => server = Some(value("--server")?),
            "--endpoint" => endpoint = Some(value("--endpoint")?),
            "--lifetime" => {
                lifetime = Some(
                    value("--lifetime")?
                        .parse::<u32>()
                        .map_err(|e| format!("--lifetime: {e}"))?,
                )
            }
            "--awake" => {
                awake = Some(
                    value("--awake")?
                        .parse::<u64>()
                        .map_err(|e| format!("--awake: {e}"))?,
                )
            }
            "--queue-mode" => queue = true,
            "--psk-identity" => psk_identity = Some(value("--psk-identity")?),
            "--cert" => cert = Some(read(&value("--cert")?)?),
            "--key" => key = Some(read(&value("--key")?)?),
            "--ca" => ca = Some(read(&value("--ca")?)?),
            "--psk-key" => {
                let hex = value("--psk-key")?;
                psk_key = Some(
                    lwm2m_server::hex::decode(&hex)
                        .filter(|k| !k.is_empty())
                        .ok_or("--psk-key is the key in hex")?,
                );
            }
            "--lwm2m" => {
                version = match value("--lwm2m")?.as_str() {
                    "1.0" => Version::V1_0,
                    "1.1" => Version::V1_1,
                    "1.2" => Version::V1_2,
                    v => return Err(format!("unsupported LwM2M version {v}")),
                }
            }
            "--format" => {
                format = match value("--format")?.as_str() {
                    "senml-cbor" => ContentFormat::SenmlCbor,
                    "senml-json" => ContentFormat::SenmlJson,
                    "tlv" => ContentFormat::Tlv,
                    "lwm2m-cbor" => ContentFormat::Lwm2mCbor,
                    f => return Err(format!("unknown format {f}")),
                }
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let server = server.ok_or("--server is required")?;
    let endpoint = endpoint.ok_or("--endpoint is required")?;
    let (secure, rest) = match (
        server.strip_prefix("coaps://"),
        server.strip_prefix("coap://"),
    ) {
        (Some(r), _) => (true, r),
        (None, Some(r)) => (false, r),
        _ => return Err("--server must be coap://HOST:PORT or coaps://HOST:PORT".into()),
    };
    let hostport = rest.trim_end_matches('/');
    let hostport = if hostport.contains(':') && !hostport.ends_with(']') {
        hostport.to_string()
    } else {
        format!("{hostport}:{}", if secure { 5684 } else { 5683 })
    };
    let certificate = match (cert, key, ca) {
        (Some(chain_pem), Some(key_pem), Some(ca_pem)) => {
            Some(lwm2m_client_sim::CertificateCredentials {
                chain_pem,
                key_pem,
                ca_pem,
            })
        }
        (None, None, None) => None,
        _ => return Err("--cert, --key and --ca go together".into()),
    };
    let psk = match (secure, psk_identity, psk_key, certificate.is_some()) {
        (true, Some(identity), Some(key), false) => Some(lwm2m_client_sim::Psk {
            identity: identity.into_bytes(),
            key,
        }),
        (true, None, None, true) | (false, None, None, false) => None,
        (true, _, _, _) => {
            return Err(
                "coaps:// needs --psk-identity and --psk-key, or --cert, --key and --ca".into(),
            )
        }
        (false, _, _, _) => return Err("credentials go with coaps://".into()),
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport} resolves to no address"))?;
    let mut c = Config::new(addr, endpoint);
    c.psk = psk;
    c.certificate = certificate;
    c.version = version;
    c.format = format;
    c.queue_mode = queue;
    if let Some(lt) = lifetime {
        c.lifetime = lt;
    }
    if let Some(a) = awake {
        c.awake_window = Duration::from_secs(a);
    }
    Ok(c)
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match parse_args(&args) {
        Ok(c) => c,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let endpoint = config.endpoint.clone();
    // Installed before the client starts: a SIGINT right after the registration must
    // de-register, not kill the process.
    let mut sigint = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot wait for SIGINT: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = match Client::start(config).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: cannot start client {endpoint}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut events = handle.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            println!("{endpoint}: {e:?}");
            if e == ClientEvent::Stopped {
                break;
            }
        }
    });
    sigint.recv().await;
    let code = match handle.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("de-registration: {e}");
            ExitCode::FAILURE
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), printer).await;
    code
}
