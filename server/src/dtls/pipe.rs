//! The transport under one DTLS session: datagrams in, datagrams out, in memory.
//!
//! OpenSSL reads and writes through the `Read`/`Write` of the stream it is given. Reading
//! hands it exactly one queued datagram (DTLS records never span datagrams), or
//! `WouldBlock` when none is queued; writing queues one datagram for the driver to send.

use std::collections::VecDeque;
use std::io::{self, Read, Write};

/// Most datagrams waiting to be read by one session: a peer that sends faster than the
/// session is driven loses the excess, as a network would.
pub const MAX_QUEUED_IN: usize = 32;

#[derive(Debug, Default)]
pub struct Pipe {
    incoming: VecDeque<Vec<u8>>,
    outgoing: Vec<Vec<u8>>,
}

impl Pipe {
    pub fn with(datagram: &[u8]) -> Pipe {
        let mut p = Pipe::default();
        p.push(datagram);
        p
    }

    /// Queues a datagram from the peer; false when the queue is full and it was dropped.
    pub fn push(&mut self, datagram: &[u8]) -> bool {
        if self.incoming.len() >= MAX_QUEUED_IN {
            return false;
        }
        self.incoming.push_back(datagram.to_vec());
        true
    }

    /// The datagrams OpenSSL wrote since the last call.
    pub fn take_outgoing(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outgoing)
    }

    /// [`take_outgoing`](Self::take_outgoing) keeping the list's allocation for the next
    /// record, which a busy session writes on every exchange.
    pub fn drain_outgoing(&mut self) -> std::vec::Drain<'_, Vec<u8>> {
        self.outgoing.drain(..)
    }

    /// Whether a datagram from the peer waits to be read.
    pub fn has_incoming(&self) -> bool {
        !self.incoming.is_empty()
    }
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.incoming.pop_front() {
            Some(d) => {
                // A datagram larger than OpenSSL's buffer is cut, as recvfrom would cut it;
                // the record layer then refuses it.
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
