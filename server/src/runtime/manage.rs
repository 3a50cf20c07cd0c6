//! The typed device-management API of a running server: an LwM2M operation
//! ([`dm::Operation`]) goes to a registered device as a CoAP request, queued
//! while a queue-mode device sleeps, and its answer comes back typed.
//!
//! The request is built and the answer read by [`crate::dm`] with the
//! device's own context (enabler version, advertised content formats,
//! alternate root path) from its current registration.

use std::sync::OnceLock;
use std::time::Duration;

use coap_lite::Packet;
use lwm2m_objects::{Codecs, Registry};

use super::{RequestError, RequestLabel, ServerHandle};
use crate::dm::{self, DeviceContext, DmError, DmResponse, Operation};
use crate::registry::Registration;

/// Why a device-management call failed.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("endpoint {0:?} is not registered")]
    NotRegistered(String),
    #[error(transparent)]
    Dm(#[from] DmError),
    #[error(transparent)]
    Request(#[from] RequestError),
}

/// A device's answer to an operation, and for an Observe the observation's token (its
/// notifications carry it; an active cancel needs it).
#[derive(Debug, Clone, PartialEq)]
pub struct Performed {
    pub response: DmResponse,
    pub observation: Option<Vec<u8>>,
}

/// An operation on its way to a device; [`finish`](Self::finish) waits for the answer.
#[derive(Debug)]
pub struct Submitted {
    op: Operation,
    device: DeviceContext,
    in_flight: super::InFlight,
}

impl Submitted {
    pub async fn finish(self) -> Result<Performed, ManageError> {
        let (codecs, model) = codecs_and_model();
        let reply = self.in_flight.wait().await?;
        Ok(Performed {
            response: self
                .op
                .parse_response(&reply.packet, &self.device, codecs, model)?,
            observation: self.op.is_observe().then_some(reply.token),
        })
    }
}

impl RequestLabel {
    /// The label of an operation: its name and the LwM2M paths it targets.
    pub fn for_operation(op: &Operation, request_id: Option<String>) -> RequestLabel {
        let paths = match op {
            Operation::ReadComposite { paths, .. }
            | Operation::ObserveComposite { paths, .. }
            | Operation::CancelObserveComposite { paths, .. } => paths.clone(),
            Operation::WriteComposite { nodes, .. } => nodes.keys().copied().collect(),
            other => vec![other.path()],
        };
        RequestLabel {
            operation: op.name().to_string(),
            paths,
            request_id,
        }
    }

    /// The paths as one text, `/3/0/1,/3/0/2`.
    pub fn paths_text(&self) -> String {
        let texts: Vec<String> = self.paths.iter().map(ToString::to_string).collect();
        texts.join(",")
    }
}

/// The codecs and the core object model, built once.
fn codecs_and_model() -> &'static (Codecs, Registry) {
    static SHARED: OnceLock<(Codecs, Registry)> = OnceLock::new();
    SHARED.get_or_init(|| (Codecs::new(), Registry::with_core()))
}

impl ServerHandle {
    /// Performs one operation on a registered device and waits for its typed
    /// answer. `expires_in` bounds how long the request may wait for a
    /// sleeping device. An Observe leaves the observation in place; its
    /// notifications arrive as [`super::ServerEvent::Notification`] and are read
    /// with [`ServerHandle::read_notification`].
    pub async fn perform(
        &self,
        endpoint_name: &str,
        op: &Operation,
        expires_in: Duration,
    ) -> Result<DmResponse, ManageError> {
        self.perform_tracked(endpoint_name, op, expires_in, None)
            .await
            .map(|p| p.response)
    }

    /// Observes like [`perform`](Self::perform) and also hands back the
    /// observation's token: notifications carry it, and
    /// [`cancel`](Self::cancel) needs it.
    pub async fn observe_with_token(
        &self,
        endpoint_name: &str,
        op: &Operation,
        expires_in: Duration,
    ) -> Result<(Vec<u8>, DmResponse), ManageError> {
        let p = self
            .perform_tracked(endpoint_name, op, expires_in, None)
            .await?;
        Ok((p.observation.unwrap_or_default(), p.response))
    }

    /// [`perform`](Self::perform) under the caller's `request_id`, which is stored with
    /// the request while it waits for a sleeping device: should the server restart
    /// meanwhile, the answer is reported as
    /// [`super::ServerEvent::QueuedRequestCompleted`] with that id. The
    /// answer carries the observation's token for an Observe.
    pub async fn perform_tracked(
        &self,
        endpoint_name: &str,
        op: &Operation,
        expires_in: Duration,
        request_id: Option<String>,
    ) -> Result<Performed, ManageError> {
        self.submit_tracked(endpoint_name, op, expires_in, request_id)
            .await?
            .finish()
            .await
    }

    /// The first half of [`perform_tracked`](Self::perform_tracked): returns once the
    /// request is sent to an awake device or persisted in a sleeping one's queue, so a
    /// caller can promise its result before it has it; [`Submitted::finish`] waits for
    /// the answer.
    pub async fn submit_tracked(
        &self,
        endpoint_name: &str,
        op: &Operation,
        expires_in: Duration,
        request_id: Option<String>,
    ) -> Result<Submitted, ManageError> {
        let device = self.device_context(endpoint_name).await?;
        self.submit_to(endpoint_name, device, op, expires_in, request_id)
            .await
    }

    /// [`submit_tracked`](Self::submit_tracked) for a caller that already holds the
    /// device's registration (the API looked it up to know whether the device is
    /// reachable): one lookup less.
    pub async fn submit_tracked_to(
        &self,
        registration: &Registration,
        op: &Operation,
        expires_in: Duration,
        request_id: Option<String>,
    ) -> Result<Submitted, ManageError> {
        let device = DeviceContext::from_registration(registration);
        self.submit_to(&registration.endpoint, device, op, expires_in, request_id)
            .await
    }

    async fn submit_to(
        &self,
        endpoint_name: &str,
        device: DeviceContext,
        op: &Operation,
        expires_in: Duration,
        request_id: Option<String>,
    ) -> Result<Submitted, ManageError> {
        let (codecs, model) = codecs_and_model();
        let mut request = op.to_request(&device, codecs, model)?;
        let observe = op.is_observe();
        if observe {
            request.set_observe_value(0);
        }
        let label = RequestLabel::for_operation(op, request_id);
        let in_flight = self
            .submit(endpoint_name, request, true, observe, expires_in, label)
            .await?;
        Ok(Submitted {
            op: op.clone(),
            device,
            in_flight,
        })
    }

    /// Ends an observation actively with `cancel_op` (Cancel-Observe or
    /// Cancel-Observe-Composite of the observed paths): the device gets the
    /// GET/FETCH with Observe=1 on the observation's token and answers with
    /// the current value.
    pub async fn cancel(
        &self,
        endpoint_name: &str,
        token: &[u8],
        cancel_op: &Operation,
    ) -> Result<DmResponse, ManageError> {
        let (codecs, model) = codecs_and_model();
        let device = self.device_context(endpoint_name).await?;
        let request = cancel_op.to_request(&device, codecs, model)?;
        let response = self.cancel_observation(token, request).await?;
        Ok(cancel_op.parse_response(&response, &device, codecs, model)?)
    }

    async fn device_context(&self, endpoint_name: &str) -> Result<DeviceContext, ManageError> {
        self.registration(endpoint_name)
            .await
            .map(|reg| DeviceContext::from_registration(&reg))
            .ok_or_else(|| ManageError::NotRegistered(endpoint_name.to_string()))
    }

    /// Reads a notification of an observation made with `op`.
    pub async fn read_notification(
        &self,
        endpoint_name: &str,
        op: &Operation,
        packet: &Packet,
    ) -> Result<DmResponse, ManageError> {
        let device = self.device_context(endpoint_name).await?;
        Ok(self.read_answer(&device, op, packet)?)
    }

    /// Reads a device's answer or notification to `op` with a context already in hand
    /// (a [`super::ServerEvent::Notification`] carries one): no lookup in the driver.
    pub fn read_answer(
        &self,
        device: &DeviceContext,
        op: &Operation,
        packet: &Packet,
    ) -> Result<DmResponse, DmError> {
        let (codecs, model) = codecs_and_model();
        op.parse_response(packet, device, codecs, model)
    }

    /// Reads what a device sent with Send (`POST /dp`).
    pub fn read_send(
        &self,
        content_format: Option<u16>,
        payload: &[u8],
    ) -> Result<dm::SendData, dm::SendError> {
        let (codecs, model) = codecs_and_model();
        let mut packet = Packet::new();
        packet.header.code = coap_lite::MessageClass::Request(coap_lite::RequestType::Post);
        if let Some(cf) = content_format {
            packet.add_option(
                coap_lite::CoapOption::ContentFormat,
                super::route::encode_uint(u32::from(cf)),
            );
        }
        packet.payload = payload.to_vec();
        dm::parse_send(&packet, codecs, model)
    }
}
