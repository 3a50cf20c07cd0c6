//! `lwm2m-client-sim`: runs one simulated LwM2M device against a server until
//! Ctrl-C, then de-registers. With `--bootstrap` it first bootstraps, prints
//! `bootstrapped server=URI` on stdout, and registers with that account.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use lwm2m_client_sim::{
    bootstrap, Account, BootstrapConfig, CertificateCredentials, Client, ClientEvent, Config,
    DeliveryMethod, FailureMode, FirmwareConfig, Protocol, Psk, ServerUri,
};
use lwm2m_objects::{ContentFormat, Version};

const USAGE: &str =
    "usage: lwm2m-client-sim (--server coap[s]://HOST:PORT | --bootstrap coap[s]://HOST:PORT) \
--endpoint NAME [--lifetime S] [--queue-mode] [--awake S] [--lwm2m 1.0|1.1|1.2] \
[--format senml-cbor|senml-json|tlv|lwm2m-cbor] [--psk-identity ID --psk-key HEX] \
[--cert PEM --key PEM --ca PEM] [--fw-fail MODE] [--fw-lie] [--fw-max-size BYTES] \
[--fw-block-size 16..1024] [--fw-block-delay-ms MS] [--fw-update-ms MS] \
[--fw-interrupt-after BLOCKS [--fw-interrupt-ms MS]] [--fw-protocols 0,1,2] \
[--fw-delivery pull|push|both]
--fw-fail MODE: out-of-storage, out-of-memory, connection-lost, integrity, \
unsupported-package, invalid-uri, update-failed, unsupported-protocol";

/// Where the device gets its server from.
enum Target {
    /// `--server`: registers there.
    Server(ServerUri),
    /// `--bootstrap`: bootstraps there, then registers with the account it was given.
    Bootstrap(ServerUri),
}

/// The command line, before any name is resolved.
struct Args {
    target: Target,
    endpoint: String,
    lifetime: Option<u32>,
    queue: bool,
    awake: Option<u64>,
    version: Version,
    format: ContentFormat,
    /// Whether `--format` was given: only then is it sent to a bootstrap server as `pct=`.
    format_given: bool,
    psk: Option<Psk>,
    certificate: Option<CertificateCredentials>,
    firmware: FirmwareConfig,
    update_time: Option<Duration>,
}

fn number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    text.parse::<T>().map_err(|e| format!("{name}: {e}"))
}

fn protocols(text: &str) -> Result<Vec<Protocol>, String> {
    text.split(',')
        .map(|p| match p.trim() {
            "0" => Ok(Protocol::Coap),
            "1" => Ok(Protocol::Coaps),
            "2" => Ok(Protocol::Http),
            "3" => Ok(Protocol::Https),
            "4" => Ok(Protocol::CoapTcp),
            "5" => Ok(Protocol::CoapTls),
            other => Err(format!("--fw-protocols: {other:?} is not 0..5")),
        })
        .collect()
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut server = None;
    let mut bootstrap = None;
    let mut endpoint = None;
    let mut lifetime = None;
    let mut queue = false;
    let mut awake = None;
    let mut version = Version::V1_1;
    let mut format = None;
    let mut psk_identity = None;
    let mut psk_key = None;
    let (mut cert, mut key, mut ca) = (None, None, None);
    let mut firmware = FirmwareConfig::default();
    let mut update_time = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--server" => server = Some(value("--server")?),
            "--bootstrap" => bootstrap = Some(value("--bootstrap")?),
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
                format = Some(match value("--format")?.as_str() {
                    "senml-cbor" => ContentFormat::SenmlCbor,
                    "senml-json" => ContentFormat::SenmlJson,
                    "tlv" => ContentFormat::Tlv,
                    "lwm2m-cbor" => ContentFormat::Lwm2mCbor,
                    f => return Err(format!("unknown format {f}")),
                })
            }
            "--fw-fail" => {
                firmware.fail = Some(
                    value("--fw-fail")?
                        .parse::<FailureMode>()
                        .map_err(|e| e.to_string())?,
                )
            }
            "--fw-lie" => firmware.lie = true,
            "--fw-max-size" => {
                firmware.max_package_size = number("--fw-max-size", &value("--fw-max-size")?)?
            }
            "--fw-block-size" => {
                let size: usize = number("--fw-block-size", &value("--fw-block-size")?)?;
                if !(16..=1024).contains(&size) || !size.is_power_of_two() {
                    return Err("--fw-block-size is a power of two from 16 to 1024".into());
                }
                firmware.block_size = size;
            }
            "--fw-block-delay-ms" => {
                firmware.block_delay = Duration::from_millis(number(
                    "--fw-block-delay-ms",
                    &value("--fw-block-delay-ms")?,
                )?)
            }
            "--fw-update-ms" => {
                update_time = Some(Duration::from_millis(number(
                    "--fw-update-ms",
                    &value("--fw-update-ms")?,
                )?))
            }
            "--fw-interrupt-after" => {
                firmware.interrupt_after_blocks = Some(number(
                    "--fw-interrupt-after",
                    &value("--fw-interrupt-after")?,
                )?)
            }
            "--fw-interrupt-ms" => {
                firmware.interrupt_for = Duration::from_millis(number(
                    "--fw-interrupt-ms",
                    &value("--fw-interrupt-ms")?,
                )?)
            }
            "--fw-protocols" => firmware.protocols = protocols(&value("--fw-protocols")?)?,
            "--fw-delivery" => {
                firmware.delivery = match value("--fw-delivery")?.as_str() {
                    "pull" => DeliveryMethod::Pull,
                    "push" => DeliveryMethod::Push,
                    "both" => DeliveryMethod::Both,
                    d => return Err(format!("--fw-delivery: {d:?} is not pull, push or both")),
                }
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let target = match (server, bootstrap) {
        (Some(s), None) => Target::Server(
            s.parse()
                .map_err(|_| "--server must be coap://HOST:PORT or coaps://HOST:PORT")?,
        ),
        (None, Some(b)) => Target::Bootstrap(
            b.parse()
                .map_err(|_| "--bootstrap must be coap://HOST:PORT or coaps://HOST:PORT")?,
        ),
        (Some(_), Some(_)) => return Err("--server and --bootstrap exclude each other".into()),
        (None, None) => return Err("--server or --bootstrap is required".into()),
    };
    let endpoint = endpoint.ok_or("--endpoint is required")?;
    let certificate = match (cert, key, ca) {
        (Some(chain_pem), Some(key_pem), Some(ca_pem)) => Some(CertificateCredentials {
            chain_pem,
            key_pem,
            ca_pem,
        }),
        (None, None, None) => None,
        _ => return Err("--cert, --key and --ca go together".into()),
    };
    let psk = match (psk_identity, psk_key) {
        (Some(identity), Some(key)) => Some(Psk {
            identity: identity.into_bytes(),
            key,
        }),
        (None, None) => None,
        _ => return Err("--psk-identity and --psk-key go together".into()),
    };
    match &target {
        Target::Server(uri) => match (uri.secure, psk.is_some(), certificate.is_some()) {
            (true, true, false) | (true, false, true) | (false, false, false) => {}
            (true, _, _) => {
                return Err(
                    "coaps:// needs --psk-identity and --psk-key, or --cert, --key and --ca".into(),
                )
            }
            (false, _, _) => return Err("credentials go with coaps://".into()),
        },
        Target::Bootstrap(uri) => match (uri.secure, psk.is_some(), certificate.is_some()) {
            (_, _, true) => return Err("--bootstrap takes PSK credentials only, not --cert".into()),
            (true, true, _) | (false, false, _) => {}
            (true, false, _) => {
                return Err("--bootstrap coaps:// needs --psk-identity and --psk-key".into())
            }
            (false, true, _) => return Err("credentials go with coaps://".into()),
        },
    }
    Ok(Args {
        target,
        endpoint,
        lifetime,
        queue,
        awake,
        version,
        format: format.unwrap_or(ContentFormat::SenmlCbor),
        format_given: format.is_some(),
        psk,
        certificate,
        firmware,
        update_time,
    })
}

impl Args {
    /// The settings of the command line that are not about the server.
    fn apply(&self, c: &mut Config) {
        c.version = self.version;
        c.format = self.format;
        c.queue_mode |= self.queue;
        if let Some(a) = self.awake {
            c.awake_window = Duration::from_secs(a);
        }
        c.firmware = self.firmware.clone();
        if let Some(t) = self.update_time {
            c.profile.update_time = t;
        }
    }

    /// A client for `--server`.
    fn direct_config(&self, server: SocketAddr) -> Config {
        let mut c = Config::new(server, self.endpoint.clone());
        c.psk = self.psk.clone();
        c.certificate = self.certificate.clone();
        if let Some(lt) = self.lifetime {
            c.lifetime = lt;
        }
        self.apply(&mut c);
        c
    }

    /// A client for the account a bootstrap gave: its server, credentials and
    /// lifetime (`--lifetime` only when the account has none).
    fn account_config(&self, account: &Account) -> Config {
        let mut c = account.config(self.endpoint.clone());
        if let (None, Some(lt)) = (account.lifetime, self.lifetime) {
            c.lifetime = lt;
        }
        self.apply(&mut c);
        c
    }

    fn bootstrap_config(&self, server: SocketAddr) -> BootstrapConfig {
        let mut b = BootstrapConfig::new(server, self.endpoint.clone());
        b.psk = self.psk.clone();
        b.version = self.version;
        if self.format_given && self.version != Version::V1_0 {
            b.preferred_format = Some(self.format.code());
        }
        b
    }
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

fn usage_error(e: &str) -> ExitCode {
    if !e.is_empty() {
        eprintln!("error: {e}");
    }
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

/// `lwm2m-client-sim fleet --server coap://HOST:PORT --count N [--profile FILE] [--prefix P]
/// [--rate R] [--lifetime S] [--queue-mode] [--awake S] [--sleep S] [--duration S]
/// [--max-awake N] [--no-park]`: N devices, one loopback address each, their values drawn
/// from the behaviour profile when one is given (the flags win over its counterparts); a
/// progress line a second while they start and every ten seconds after, then they run
/// until SIGINT (or for `--duration` seconds) and de-register. Sleeping queue-mode
/// devices are parked (`--no-park`: they stay running clients); at most `--max-awake`
/// run at once.
const FLEET_USAGE: &str = "usage: lwm2m-client-sim fleet --server coap://HOST:PORT --count N \
[--profile FILE] [--prefix P] [--rate DEVICES_PER_S] [--lifetime S] [--queue-mode] [--awake S] \
[--sleep S] [--duration S] [--max-awake N] [--no-park]
--count, --prefix and --rate may come from the profile instead";

struct FleetArgs {
    server: ServerUri,
    count: Option<usize>,
    profile: Option<std::path::PathBuf>,
    prefix: Option<String>,
    rate: Option<u32>,
    lifetime: Option<u32>,
    queue: bool,
    awake: Option<u64>,
    sleep: Option<u64>,
    duration: Option<u64>,
    max_awake: Option<usize>,
    park: bool,
}

fn parse_fleet(args: &[String]) -> Result<FleetArgs, String> {
    let mut server = None;
    let mut a = FleetArgs {
        server: "coap://127.0.0.1:5683"
            .parse()
            .map_err(|_| "default server")?,
        count: None,
        profile: None,
        prefix: None,
        rate: None,
        lifetime: None,
        queue: false,
        awake: None,
        sleep: None,
        duration: None,
        max_awake: None,
        park: true,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--server" => server = Some(value("--server")?),
            "--count" => a.count = Some(number::<usize>("--count", &value("--count")?)?),
            "--profile" => a.profile = Some(value("--profile")?.into()),
            "--prefix" => a.prefix = Some(value("--prefix")?),
            "--rate" => a.rate = Some(number("--rate", &value("--rate")?)?),
            "--lifetime" => a.lifetime = Some(number("--lifetime", &value("--lifetime")?)?),
            "--queue-mode" => a.queue = true,
            "--awake" => a.awake = Some(number("--awake", &value("--awake")?)?),
            "--sleep" => a.sleep = Some(number("--sleep", &value("--sleep")?)?),
            "--duration" => a.duration = Some(number("--duration", &value("--duration")?)?),
            "--max-awake" => {
                a.max_awake = Some(number::<usize>("--max-awake", &value("--max-awake")?)?)
            }
            "--no-park" => a.park = false,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    a.server = server
        .ok_or("--server is required")?
        .parse()
        .map_err(|_| "--server must be coap://HOST:PORT")?;
    if a.server.secure {
        return Err("a fleet speaks plain CoAP for now (coap://)".into());
    }
    if a.count.is_none() && a.profile.is_none() {
        return Err("--count is required".into());
    }
    Ok(a)
}

/// The fleet the arguments and the profile describe: the flags win over the profile's
/// counterparts.
fn fleet_config(
    a: &FleetArgs,
    server: SocketAddr,
    profile: Option<lwm2m_client_sim::profile::Profile>,
) -> Result<lwm2m_client_sim::fleet::FleetConfig, String> {
    let count = a
        .count
        .or_else(|| profile.as_ref().and_then(|p| p.count()))
        .ok_or("--count is required (the profile gives no count)")?;
    let mut cfg = lwm2m_client_sim::fleet::FleetConfig::new(Config::new(server, "fleet"), count);
    if let Some(p) = a.prefix.clone().or_else(|| {
        profile
            .as_ref()
            .and_then(|p| p.prefix().map(str::to_string))
    }) {
        cfg.prefix = p;
    }
    if let Some(r) = a
        .rate
        .or_else(|| profile.as_ref().and_then(|p| p.start_rate()))
    {
        cfg.start_rate = r;
    }
    cfg.overrides = lwm2m_client_sim::fleet::Overrides {
        lifetime: a.lifetime,
        queue_mode: a.queue.then_some(true),
        awake_window: a.awake.map(Duration::from_secs),
        sleep_duration: a.sleep.map(Duration::from_secs),
    };
    cfg.profile = profile.map(std::sync::Arc::new);
    if let Some(m) = a.max_awake {
        cfg.max_awake = m;
    }
    cfg.park = a.park;
    Ok(cfg)
}

async fn fleet(args: &[String]) -> ExitCode {
    let a = match parse_fleet(args) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{FLEET_USAGE}");
            return ExitCode::from(2);
        }
    };
    let profile = match &a.profile {
        None => None,
        Some(path) => match lwm2m_client_sim::profile::Profile::load(path) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("error: profile {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let server = match a.server.resolve().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot resolve {}: {e}", a.server.host);
            return ExitCode::from(2);
        }
    };
    let cfg = match fleet_config(&a, server, profile) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("{FLEET_USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(p) = &cfg.profile {
        println!(
            "fleet profile name={} seed={} devices={} {}",
            p.name().unwrap_or("-"),
            p.seed(),
            cfg.count,
            p.mix(cfg.count)
        );
    }
    let mut sigint = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot wait for SIGINT: {e}");
            return ExitCode::FAILURE;
        }
    };
    let line = |p: lwm2m_client_sim::fleet::Progress, elapsed: Duration| {
        let secs = elapsed.as_secs_f64().max(0.001);
        println!(
            "fleet started={} registered={} failed={} asleep={} awake={} wakes={} lost={} \
             parked_kib={} rate={:.0}/s elapsed_ms={}",
            p.started,
            p.registered,
            p.failed,
            p.asleep,
            p.awake,
            p.wakes,
            p.lost,
            p.parked_bytes / 1024,
            p.registered as f64 / secs,
            elapsed.as_millis()
        );
        let _ = std::io::stdout().flush();
    };
    let running = tokio::select! {
        f = lwm2m_client_sim::fleet::Fleet::start(cfg, line) => f,
        _ = sigint.recv() => {
            eprintln!("interrupted while starting the fleet");
            return ExitCode::FAILURE;
        }
    };
    let fleet = match running {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let p = fleet.progress();
    println!(
        "fleet ready registered={} failed={} elapsed_ms={}",
        p.registered,
        p.failed,
        fleet.started_at.elapsed().as_millis()
    );

    let _ = std::io::stdout().flush();
    let until = a
        .duration
        .and_then(|s| tokio::time::Instant::now().checked_add(Duration::from_secs(s)));
    let mut every = tokio::time::interval(Duration::from_secs(10));
    every.tick().await;
    // One pass every ten seconds until the duration is over or SIGINT comes.
    loop {
        let over = async {
            match until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = over => break,
            _ = sigint.recv() => break,
            _ = every.tick() => line(fleet.progress(), fleet.started_at.elapsed()),
        }
    }
    let limited = fleet.cells().iter().filter(|c| c.is_limited()).count();
    if limited > 0 {
        let (passed, dropped) = fleet.cell_counts();
        println!("fleet cells={limited} datagrams={passed} dropped_in_cells={dropped}");
        let _ = std::io::stdout().flush();
    }
    fleet.shutdown(256).await;
    if p.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `bench ...`: see `lwm2m_client_sim::bench`.
async fn bench(args: &[String]) -> ExitCode {
    lwm2m_client_sim::bench::cli::main(args).await
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("fleet") => return fleet(args.get(1..).unwrap_or_default()).await,
        Some("bench") => return bench(args.get(1..).unwrap_or_default()).await,
        _ => {}
    }
    let args = match parse_args(&args) {
        Ok(a) => a,
        Err(e) => return usage_error(&e),
    };
    let uri = match &args.target {
        Target::Server(u) | Target::Bootstrap(u) => u,
    };
    let addr = match uri.resolve().await {
        Ok(a) => a,
        Err(e) => return usage_error(&format!("cannot resolve {}: {e}", uri.host)),
    };
    let endpoint = args.endpoint.clone();
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
    let config = match &args.target {
        Target::Server(_) => args.direct_config(addr),
        Target::Bootstrap(_) => {
            let result = tokio::select! {
                r = bootstrap(args.bootstrap_config(addr)) => r,
                _ = sigint.recv() => {
                    eprintln!("interrupted while bootstrapping");
                    return ExitCode::FAILURE;
                }
            };
            match result {
                Ok(account) => {
                    println!("bootstrapped server={}", account.uri);
                    let _ = std::io::stdout().flush();
                    args.account_config(&account)
                }
                Err(e) => {
                    eprintln!("error: bootstrap of {endpoint}: {e}");
                    return ExitCode::FAILURE;
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Result<Args, String> {
        let v: Vec<String> = text.split_whitespace().map(String::from).collect();
        parse_args(&v)
    }

    #[test]
    fn firmware_flags_reach_the_config() {
        let a = args(
            "--server coap://127.0.0.1:5683 --endpoint d --fw-fail update-failed --fw-lie \
             --fw-block-size 512 --fw-max-size 4096 --fw-update-ms 50 --fw-interrupt-after 3 \
             --fw-interrupt-ms 200 --fw-protocols 0,2 --fw-delivery pull --fw-block-delay-ms 5",
        )
        .unwrap();
        let c = a.direct_config("127.0.0.1:5683".parse().unwrap());
        let f = &c.firmware;
        assert_eq!(f.fail, Some(FailureMode::UpdateFailed));
        assert!(f.lie);
        assert_eq!((f.block_size, f.max_package_size), (512, 4096));
        assert_eq!(f.interrupt_after_blocks, Some(3));
        assert_eq!(f.interrupt_for, Duration::from_millis(200));
        assert_eq!(f.block_delay, Duration::from_millis(5));
        assert_eq!(f.protocols, vec![Protocol::Coap, Protocol::Http]);
        assert_eq!(f.delivery, DeliveryMethod::Pull);
        assert_eq!(c.profile.update_time, Duration::from_millis(50));
    }

    #[test]
    fn fleet_flags_win_over_the_profile() {
        let v = |t: &str| -> Vec<String> { t.split_whitespace().map(String::from).collect() };
        let profile = || {
            lwm2m_client_sim::profile::Profile::from_toml(
                "count = 50\nprefix = \"p-\"\nstart_rate = 9\n\
                 [[schedule]]\nlifetime_s = 900",
            )
            .ok()
        };
        let server: SocketAddr = "127.0.0.1:5683".parse().unwrap();
        let a = parse_fleet(&v("--server coap://127.0.0.1:5683 --profile x.toml")).unwrap();
        let cfg = fleet_config(&a, server, profile()).unwrap();
        assert_eq!(
            (cfg.count, cfg.prefix.as_str(), cfg.start_rate),
            (50, "p-", 9)
        );
        assert_eq!(cfg.device_config(0, &[]).lifetime, 900);
        let a = parse_fleet(&v(
            "--server coap://127.0.0.1:5683 --profile x.toml --count 3 --prefix q- --rate 7 \
             --lifetime 60 --queue-mode --awake 4 --sleep 8",
        ))
        .unwrap();
        let cfg = fleet_config(&a, server, profile()).unwrap();
        assert_eq!(
            (cfg.count, cfg.prefix.as_str(), cfg.start_rate),
            (3, "q-", 7)
        );
        let c = cfg.device_config(0, &[]);
        assert_eq!((c.lifetime, c.queue_mode), (60, true));
        assert_eq!(c.awake_window, Duration::from_secs(4));
        assert_eq!(c.sleep_duration, Duration::from_secs(8));
        // Without a profile, --count is required.
        assert!(parse_fleet(&v("--server coap://127.0.0.1:5683")).is_err());
        let a = parse_fleet(&v("--server coap://127.0.0.1:5683 --profile x.toml")).unwrap();
        assert!(fleet_config(&a, server, None).is_err());
    }

    #[test]
    fn bad_firmware_flags_are_refused() {
        let base = "--server coap://127.0.0.1:5683 --endpoint d";
        for bad in [
            "--fw-fail sometimes",
            "--fw-block-size 1000",
            "--fw-block-size 2048",
            "--fw-protocols 0,7",
            "--fw-delivery carrier-pigeon",
            "--fw-max-size lots",
        ] {
            assert!(args(&format!("{base} {bad}")).is_err(), "{bad}");
        }
    }
}
