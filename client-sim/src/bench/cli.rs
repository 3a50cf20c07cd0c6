//! `lwm2m-client-sim bench ...`: the command line of the benchmarks. Each prints its
//! figures as one `key=value` line (what BENCHMARKS.md quotes) and progress on stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::loadgen::Outcome;

const USAGE: &str = "usage: lwm2m-client-sim bench BENCHMARK [--count N] [options]
  scale    --count N [--rate DEVICES_PER_S] [--settle S] [--server-binary PATH]
  rate     --count N [--window W] [--devices D] [--cores split|shared] [--server-binary PATH]
  latency  --count N [--window W] [--devices D]
  herd     --count N [--within S] [--server-binary PATH]
  campaign --count N [--cells 20] [--package-kib 256] [--limit-s S] [--server-binary PATH]
  echo-server          (the baseline of `rate`: a UDP echo server on 127.0.0.1)";

struct Args {
    count: Option<usize>,
    rate: f64,
    settle: u64,
    window: usize,
    devices: usize,
    within: u64,
    server: Option<PathBuf>,
    /// `rate`: the devices and the peer on cores of their own (see [`super::cores`]).
    split_cores: bool,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        count: None,
        rate: 5000.0,
        settle: 0,
        window: 256,
        devices: 200,
        within: 10,
        server: None,
        split_cores: true,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n = |name: &str| v.parse::<u64>().map_err(|e| format!("{name}: {e}"));
        match flag.as_str() {
            "--count" => a.count = Some(n("--count")? as usize),
            "--rate" => a.rate = n("--rate")?.max(1) as f64,
            "--settle" => a.settle = n("--settle")?,
            "--window" => a.window = (n("--window")? as usize).clamp(1, 15_000),
            "--devices" => a.devices = (n("--devices")? as usize).clamp(1, 10_000),
            "--within" => a.within = n("--within")?.max(1),
            "--server-binary" => a.server = Some(PathBuf::from(v)),
            "--cores" => {
                a.split_cores = match v.as_str() {
                    "split" => true,
                    "shared" => false,
                    other => return Err(format!("--cores: split or shared, not {other}")),
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn usage(e: &str) -> ExitCode {
    if !e.is_empty() {
        eprintln!("error: {e}");
    }
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

/// `lwm2m-server` beside this executable unless `--server-binary` names another.
fn server_binary(a: &Args) -> Option<PathBuf> {
    a.server.clone().or_else(|| {
        std::env::current_exe()
            .ok()
            .map(|p| p.with_file_name("lwm2m-server"))
    })
}

fn progress() -> impl FnMut(&str, usize, Duration) + Send {
    |phase: &str, done: usize, t: Duration| {
        eprintln!("bench: {phase}: {done} done after {} ms", t.as_millis());
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn summary(name: &str, o: &Outcome) -> String {
    format!(
        "{name}_done={} {name}_lost={} {name}_retransmissions={} {name}_per_s={:.0} {name}_p50_ms={} {name}_p99_ms={}",
        o.done,
        o.lost,
        o.retransmissions,
        o.rate(),
        ms(o.quantile(0.5)),
        ms(o.quantile(0.99))
    )
}

pub async fn main(args: &[String]) -> ExitCode {
    let Some(which) = args.first() else {
        return usage("the benchmark to run");
    };
    if which == "echo-server" {
        return echo_server();
    }
    if which == "campaign" {
        return super::campaign::main(args.get(1..).unwrap_or_default()).await;
    }
    let a = match parse(args.get(1..).unwrap_or_default()) {
        Ok(a) => a,
        Err(e) => return usage(&e),
    };
    let Some(count) = a
        .count
        .filter(|c| (1..=crate::fleet::MAX_DEVICES / 2).contains(c))
    else {
        return usage("--count N is required (at least 1)");
    };
    let Some(server) = server_binary(&a) else {
        return usage("--server-binary is required");
    };
    let mut report = progress();
    let result = match which.as_str() {
        "scale" => super::scale(&server, count, a.rate, Duration::from_secs(a.settle), &mut report)
            .await
            .map(|r| {
                let settled = r.settled_rss_kib.map_or(String::new(), |s| {
                    format!(
                        " settled_rss_kib={s} settled_bytes_per_device={:.0}",
                        r.bytes_per_device(s)
                    )
                });
                println!(
                    "bench scale devices={} registered={} listed={} lost={} retransmissions={} \
                     empty_rss_kib={} full_rss_kib={} bytes_per_device={:.0}{settled} \
                     register_ms={} registrations_per_s={:.0}",
                    r.devices,
                    r.registered,
                    r.listed,
                    r.devices - r.listed.min(r.devices),
                    r.retransmissions,
                    r.empty_rss_kib,
                    r.full_rss_kib,
                    r.bytes_per_device(r.full_rss_kib),
                    r.register_time.as_millis(),
                    r.registered as f64 / r.register_time.as_secs_f64().max(0.001)
                );
                r.listed == r.devices
            }),
        "rate" => {
            let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("lwm2m-client-sim"));
            let split = match a.split_cores {
                true => match super::cores::Split::of_this_process() {
                    Ok(split) => split,
                    Err(e) => {
                        eprintln!("bench: cannot read this process's cores ({e}); sharing them");
                        None
                    }
                },
                false => None,
            };
            let cores = split
                .as_ref()
                .map_or_else(|| "shared".to_string(), super::cores::Split::describe);
            let regs = super::rate_registrations(
                &server,
                &exe,
                count,
                a.window,
                split.as_ref(),
                &mut report,
            )
            .await;
            match regs {
                Ok(r) => {
                    let reads = super::rate_reads(count, a.devices, a.window, &mut report).await;
                    reads.map(|reads| {
                        println!(
                            "bench rate count={count} window={} cores={cores} {} {} {} {} register_ratio={:.2} update_ratio={:.2}",
                            a.window,
                            summary("echo", &r.echo),
                            summary("register", &r.register),
                            summary("update", &r.update),
                            summary("echo_after", &r.echo_after),
                            r.register.rate() / r.echo_rate().max(1e-9),
                            r.update.rate() / r.echo_rate().max(1e-9),
                        );
                        println!(
                            "bench rate reads={count} devices={} {} {} read_ratio={:.2}",
                            reads.devices,
                            summary("bare", &reads.bare),
                            summary("server", &reads.server),
                            reads.server.rate() / reads.bare.rate().max(1e-9),
                        );
                        r.register.lost + r.update.lost + reads.server.lost == 0
                    })
                }
                Err(e) => Err(e),
            }
        }
        "latency" => super::latency(count, a.devices, a.window, &mut report).await.map(|r| {
            println!(
                "bench latency reads={count} devices={} max_per_s={:.0} paced_per_s={:.0} {} {} p50_ratio={:.2} p99_ratio={:.2}",
                a.devices,
                r.max_rate,
                r.rate,
                summary("bare", &r.bare),
                summary("server", &r.server),
                r.server.quantile(0.5).as_secs_f64() / r.bare.quantile(0.5).as_secs_f64().max(1e-9),
                r.server.quantile(0.99).as_secs_f64() / r.bare.quantile(0.99).as_secs_f64().max(1e-9),
            );
            r.server.lost == 0
        }),
        "herd" => super::herd(&server, count, Duration::from_secs(a.within), &mut report)
            .await
            .map(|r| {
                println!(
                    "bench herd devices={} within_s={} listed={} {} herd_ms={} {} {} api_p99_ratio={:.2}",
                    r.devices,
                    a.within,
                    r.listed,
                    summary("herd", &r.herd),
                    r.herd.elapsed.as_millis(),
                    summary("api_idle", &r.idle_api),
                    summary("api_herd", &r.herd_api),
                    r.herd_api.quantile(0.99).as_secs_f64()
                        / r.idle_api.quantile(0.99).as_secs_f64().max(1e-9),
                );
                r.herd.lost == 0 && r.listed == r.devices
            }),
        other => return usage(&format!("no benchmark {other}")),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench {which}: some requests were lost (see the figures)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The echo server child of `rate`: prints `echo=ADDR`, then echoes until killed.
fn echo_server() -> ExitCode {
    use std::io::Write;
    let socket = match std::net::UdpSocket::bind("127.0.0.1:0") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot bind: {e}");
            return ExitCode::FAILURE;
        }
    };
    match socket.local_addr() {
        Ok(a) => println!("echo={a}"),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let _ = std::io::stdout().flush();
    match super::loadgen::echo_serve(socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: echo: {e}");
            ExitCode::FAILURE
        }
    }
}
