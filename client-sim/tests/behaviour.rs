//! What a behaviour profile asks of one device, against the scripted server of `support`
//! on 127.0.0.1: reboots of its own accord that register again, sleeps that vary with
//! their jitter, and link conditions on the driver's own socket (loss, delay).

mod support;

use std::time::{Duration, Instant};

use lwm2m_client_sim::network::LinkConditions;
use lwm2m_client_sim::{Client, ClientEvent, Config};
use support::*;
use tokio::sync::broadcast;

const T: Duration = Duration::from_secs(5);

fn config(server: &TestServer, ep: &str) -> Config {
    let mut c = Config::new(server.addr, ep);
    c.bind = "127.0.0.1:0".parse().expect("addr");
    c.lifetime = 60;
    c.tick = Duration::from_secs(3600);
    c.reboot_delay = Duration::from_millis(20);
    c
}

fn link(loss_up: f64, latency: Duration) -> LinkConditions {
    LinkConditions {
        loss_up,
        loss_down: 0.0,
        latency: (latency, latency),
        cell: None,
        seed: 3,
    }
}

/// Events for `within`, at most `max` of them.
async fn collect(
    events: &mut broadcast::Receiver<ClientEvent>,
    within: Duration,
    max: usize,
) -> Vec<(Instant, ClientEvent)> {
    let end = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < max {
        let Some(left) = end.checked_duration_since(Instant::now()) else {
            break;
        };
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(e)) => out.push((Instant::now(), e)),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            _ => break,
        }
    }
    out
}

#[tokio::test]
async fn a_device_with_a_reboot_rate_reboots_and_registers_again() {
    let mut server = TestServer::start().await;
    let mut c = config(&server, "reboots");
    c.reboot_mean = Some(Duration::from_millis(100));
    let h = Client::start(c).await.expect("start");
    let mut events = h.subscribe();
    let seen = collect(&mut events, Duration::from_secs(2), 500).await;
    let reboots = seen
        .iter()
        .filter(|(_, e)| *e == ClientEvent::Rebooting)
        .count();
    let registered = seen
        .iter()
        .filter(|(_, e)| matches!(e, ClientEvent::Registered { .. }))
        .count();
    assert!(reboots >= 3, "{seen:?}");
    assert!(registered >= 3, "registered again after reboots: {seen:?}");
    let mut registers = 0;
    while server
        .wait_for(Duration::from_millis(50), |s| s.path() == "/rd")
        .await
        .is_some()
    {
        registers += 1;
        if registers > 1000 {
            break;
        }
    }
    assert!(registers >= 3, "the server saw {registers} Registers");
    h.shutdown().await.expect("shutdown");

    // Without a rate, no reboot.
    let h = Client::start(config(&server, "steady"))
        .await
        .expect("start");
    let mut events = h.subscribe();
    let seen = collect(&mut events, Duration::from_millis(500), 100).await;
    assert!(
        !seen.iter().any(|(_, e)| *e == ClientEvent::Rebooting),
        "{seen:?}"
    );
    h.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn sleeps_vary_within_their_jitter() {
    let mut server = TestServer::start().await;
    let mut c = config(&server, "jitter");
    c.queue_mode = true;
    c.awake_window = Duration::from_millis(50);
    c.sleep_duration = Duration::from_millis(200);
    c.sleep_jitter = 0.5;
    let h = Client::start(c).await.expect("start");
    let mut events = h.subscribe();
    server
        .wait_for(T, |s| s.path() == "/rd")
        .await
        .expect("register request");
    let seen = collect(&mut events, Duration::from_millis(2500), 400).await;
    let mut sleeps = Vec::new();
    let mut asleep_at = None;
    for (at, e) in &seen {
        match e {
            ClientEvent::Sleeping => asleep_at = Some(*at),
            ClientEvent::Awake { .. } => {
                if let Some(t) = asleep_at.take() {
                    sleeps.push(*at - t);
                }
            }
            _ => {}
        }
    }
    assert!(sleeps.len() >= 5, "{seen:?}");
    for s in &sleeps {
        assert!(
            *s >= Duration::from_millis(90) && *s <= Duration::from_millis(360),
            "{sleeps:?}"
        );
    }
    let (lo, hi) = (sleeps.iter().min(), sleeps.iter().max());
    assert!(
        hi.zip(lo)
            .is_some_and(|(h, l)| *h - *l >= Duration::from_millis(30)),
        "jitter makes sleeps differ: {sleeps:?}"
    );
    h.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_link_delays_what_the_device_sends_and_a_lost_uplink_never_arrives() {
    let mut server = TestServer::start().await;
    let mut c = config(&server, "slow");
    c.link = Some(link(0.0, Duration::from_millis(150)));
    let t0 = Instant::now();
    let h = Client::start(c).await.expect("start");
    let reg = server
        .wait_for(T, |s| s.path() == "/rd")
        .await
        .expect("register request");
    assert!(
        reg.at - t0 >= Duration::from_millis(150),
        "{:?}",
        reg.at - t0
    );
    // The answer is held back as long on the way in.
    h.wait_registered(T).await.expect("registered");
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    h.shutdown().await.expect("shutdown");

    let mut c = config(&server, "lost");
    c.link = Some(link(1.0, Duration::ZERO));
    let h = Client::start(c).await.expect("start");
    assert!(server
        .wait_for(Duration::from_millis(800), |s| s.path() == "/rd")
        .await
        .is_none());
    assert!(h.wait_registered(Duration::from_millis(100)).await.is_err());
}
