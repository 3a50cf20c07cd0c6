//! What the server reads of a device when it registers (or announces new objects): the
//! Device object's static facts, the firmware protocols and delivery methods of object 5,
//! and observations of what changes (battery, connectivity, location) with notification
//! attributes that keep a fleet's notification traffic modest.
//!
//! At most [`super::FleetSettings::read_concurrency`] always-reachable devices are read at
//! once. Queue-mode devices take no part in that bound: their requests wait on the device
//! until it wakes, seconds to hours, and a permit held through that sleep would stall the
//! reads of every other device behind it (a fleet with a third in queue mode learned its
//! attributes at a few dozen devices a second). What paces them is their own wakes.
//!
//! What went unanswered is asked again, twice, after a pause (see [`ROUNDS`]): a read
//! lost once would otherwise leave a device out of every group that needs the
//! attribute until it registers again.

use std::time::Duration;

use lwm2m_objects::link::{AttributeValue, Attributes};
use lwm2m_objects::Path;

use super::Fleet;
use crate::dm::{DmResponse, Operation};
use crate::registry::Registration;
use crate::runtime::ManageError;

/// How long a read waits for a sleeping device.
const READ_EXPIRY: Duration = Duration::from_secs(3_600);

/// Notification attributes: pmin and pmax, in seconds.
type PminPmax = (u32, u32);

/// What is observed, and where its notification attributes are written (pmin, pmax in
/// seconds): the radio's state (cell, signal, network) matters to campaigns within
/// minutes, a tracker's location within a minute or two. They are written on the object
/// instance, where a resource's own attributes (an operator's) take precedence over
/// them. The battery level is observed on the device's own defaults: attributes written
/// for it would be the operator's too, since both observe the same resource.
const OBSERVED: [(&[u16], Option<PminPmax>); 3] = [
    (&[3, 0, 9], None),
    (&[4, 0], Some((60, 3_600))),
    (&[6, 0], Some((60, 3_600))),
];

/// Rounds of the steps that failed for want of an answer (a lost datagram, a device
/// unreachable for a while), and the pause before each further round. A device that
/// answers with an error is not asked again: it has said what it has.
const ROUNDS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_secs(30),
    Duration::from_secs(300),
];

/// One thing to learn of a device.
#[derive(Clone, Copy)]
enum Step {
    Read(&'static [u16]),
    Observe(&'static [u16], Option<PminPmax>),
}

/// What a step came to.
enum Outcome {
    Done,
    /// No answer: worth another round.
    Unanswered,
    /// The device is gone: nothing more to ask.
    Gone,
}

/// Reads (and observes) `reg`'s device in the background.
pub(super) fn spawn(fleet: Fleet, reg: &Registration) {
    let endpoint = reg.endpoint.clone();
    let has = |o: u16| reg.objects.objects.iter().any(|l| l.object == o);
    let mut steps = vec![Step::Read(&[3, 0])];
    if has(5) {
        steps.push(Step::Read(&[5, 0]));
    }
    for (ids, attributes) in OBSERVED {
        if ids[0] == 3 || has(ids[0]) {
            steps.push(Step::Observe(ids, attributes));
        }
    }
    let queue_mode = reg.queue_mode;
    tokio::spawn(async move {
        for pause in ROUNDS {
            if steps.is_empty() {
                return;
            }
            tokio::time::sleep(pause).await;
            let _permit = if queue_mode {
                None
            } else {
                match fleet.read_permits().acquire_owned().await {
                    Ok(p) => Some(p),
                    Err(_) => return,
                }
            };
            let mut left = Vec::new();
            for step in steps {
                let outcome = match step {
                    Step::Read(ids) => read(&fleet, &endpoint, ids).await,
                    Step::Observe(ids, attributes) => {
                        observe(&fleet, &endpoint, ids, attributes).await
                    }
                };
                match outcome {
                    Outcome::Done => {}
                    Outcome::Unanswered => left.push(step),
                    Outcome::Gone => return,
                }
            }
            steps = left;
        }
    });
}

fn outcome<T>(r: &Result<T, ManageError>) -> Outcome {
    match r {
        Ok(_) | Err(ManageError::Dm(_)) => Outcome::Done,
        Err(ManageError::Request(_)) => Outcome::Unanswered,
        Err(ManageError::NotRegistered(_)) => Outcome::Gone,
    }
}

async fn read(fleet: &Fleet, endpoint: &str, ids: &[u16]) -> Outcome {
    let Ok(path) = Path::from_ids(ids) else {
        return Outcome::Done;
    };
    let op = Operation::Read { path, format: None };
    let r = fleet.handle().perform(endpoint, &op, READ_EXPIRY).await;
    match &r {
        Ok(DmResponse::Node(node)) => fleet.apply_node(endpoint, &path, node),
        Ok(_) => {}
        Err(e) => tracing::debug!(endpoint, %path, error = %e, "inventory read failed"),
    }
    outcome(&r)
}

async fn observe(
    fleet: &Fleet,
    endpoint: &str,
    ids: &[u16],
    attributes: Option<PminPmax>,
) -> Outcome {
    let Ok(path) = Path::from_ids(ids) else {
        return Outcome::Done;
    };
    // Whoever observes a path, the inventory reads its notifications: a second
    // observation (after an Update that changed the objects, or the operator's own) would
    // only double the device's traffic.
    let observed = fleet
        .handle()
        .observations(endpoint)
        .await
        .iter()
        .any(|o| !o.composite && o.paths == [path]);
    if observed {
        return Outcome::Done;
    }
    if let Some((pmin, pmax)) = attributes {
        let attributes = Attributes {
            pmin: Some(AttributeValue::Set(pmin)),
            pmax: Some(AttributeValue::Set(pmax)),
            ..Attributes::default()
        };
        // Write-Attributes first: LwM2M 1.0 and 1.1 devices take notification attributes
        // only that way. A device that refuses them notifies on its own defaults.
        let write = Operation::WriteAttributes { path, attributes };
        if let Err(e) = fleet.handle().perform(endpoint, &write, READ_EXPIRY).await {
            tracing::debug!(endpoint, %path, error = %e, "notification attributes refused");
        }
    }
    let op = Operation::Observe {
        path,
        attributes: Attributes::default(),
        format: None,
    };
    let r = fleet.handle().perform(endpoint, &op, READ_EXPIRY).await;
    match &r {
        Ok(DmResponse::Observed { node, .. }) | Ok(DmResponse::Node(node)) => {
            fleet.apply_node(endpoint, &path, node)
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(endpoint, %path, error = %e, "inventory observation failed"),
    }
    outcome(&r)
}
