//! What the server reads of a device when it registers (or announces new objects): the
//! Device object's static facts, the firmware protocols and delivery methods of object 5,
//! and observations of what changes (battery, connectivity, location) with notification
//! attributes that keep a fleet's notification traffic modest.
//!
//! At most [`super::FleetSettings::read_concurrency`] devices are read at once; a queue-mode
//! device that falls asleep before its turn gets the requests when it wakes.

use std::time::Duration;

use lwm2m_objects::link::{AttributeValue, Attributes};
use lwm2m_objects::Path;

use super::Fleet;
use crate::dm::{DmResponse, Operation};
use crate::registry::Registration;

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

/// Reads (and observes) `reg`'s device in the background.
pub(super) fn spawn(fleet: Fleet, reg: &Registration) {
    let endpoint = reg.endpoint.clone();
    let has = |o: u16| reg.objects.objects.iter().any(|l| l.object == o);
    let (has4, has5, has6) = (has(4), has(5), has(6));
    tokio::spawn(async move {
        let Ok(_permit) = fleet.read_permits().acquire_owned().await else {
            return;
        };
        read(&fleet, &endpoint, &[3, 0]).await;
        if has5 {
            read(&fleet, &endpoint, &[5, 0]).await;
        }
        for (ids, attributes) in OBSERVED {
            let present = match ids[0] {
                4 => has4,
                6 => has6,
                _ => true,
            };
            if present {
                observe(&fleet, &endpoint, ids, attributes).await;
            }
        }
    });
}

async fn read(fleet: &Fleet, endpoint: &str, ids: &[u16]) {
    let Ok(path) = Path::from_ids(ids) else {
        return;
    };
    let op = Operation::Read { path, format: None };
    match fleet.handle().perform(endpoint, &op, READ_EXPIRY).await {
        Ok(DmResponse::Node(node)) => fleet.apply_node(endpoint, &path, &node),
        Ok(_) => {}
        Err(e) => tracing::debug!(endpoint, %path, error = %e, "inventory read failed"),
    }
}

async fn observe(fleet: &Fleet, endpoint: &str, ids: &[u16], attributes: Option<PminPmax>) {
    let Ok(path) = Path::from_ids(ids) else {
        return;
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
        return;
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
    match fleet.handle().perform(endpoint, &op, READ_EXPIRY).await {
        Ok(DmResponse::Observed { node, .. }) | Ok(DmResponse::Node(node)) => {
            fleet.apply_node(endpoint, &path, &node)
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(endpoint, %path, error = %e, "inventory observation failed"),
    }
}
