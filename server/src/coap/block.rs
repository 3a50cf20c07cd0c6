//! Block options (RFC 7959 §2.2) and reassembly of incoming Block1 uploads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{Packet, ResponseType};

/// Why a Block1/Block2 option value is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block option longer than 3 bytes")]
    TooLong,
    #[error("block size exponent 7 is reserved")]
    ReservedSzx,
}

/// One Block1 or Block2 option value: block number, more flag, size exponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockOpt {
    pub num: u32,
    pub more: bool,
    pub szx: u8,
}

/// Largest block number that fits the 20 bits of a 3-byte option.
pub const MAX_NUM: u32 = (1 << 20) - 1;

impl BlockOpt {
    pub fn decode(bytes: &[u8]) -> Result<Self, BlockError> {
        if bytes.len() > 3 {
            return Err(BlockError::TooLong);
        }
        let v = bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        let szx = (v & 7) as u8;
        if szx == 7 {
            return Err(BlockError::ReservedSzx);
        }
        Ok(Self {
            num: v >> 4,
            more: v & 8 != 0,
            szx,
        })
    }

    pub fn encode(self) -> Vec<u8> {
        let v =
            (self.num.min(MAX_NUM) << 4) | (u32::from(self.more) << 3) | u32::from(self.szx & 7);
        encode_uint(v)
    }

    pub fn size(self) -> usize {
        size_of_szx(self.szx)
    }

    pub fn offset(self) -> usize {
        (self.num as usize) << (u32::from(self.szx.min(6)) + 4)
    }
}

/// Bytes of a block with size exponent `szx` (clamped to the largest legal one).
pub fn size_of_szx(szx: u8) -> usize {
    1usize << (szx.min(6) + 4)
}

/// Minimal big-endian encoding of a CoAP uint option (zero is the empty string).
pub fn encode_uint(v: u32) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes.get(skip..).map(<[u8]>::to_vec).unwrap_or_default()
}

/// A CoAP uint option of at most 4 bytes; longer ones are malformed.
pub fn decode_uint(bytes: &[u8]) -> Option<u32> {
    if bytes.len() > 4 {
        return None;
    }
    Some(bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// The Block1 or Block2 option of a packet: `None` if absent.
pub fn block_of(packet: &Packet, number: u16) -> Option<Result<BlockOpt, BlockError>> {
    packet
        .get_first_option(number.into())
        .map(|v| BlockOpt::decode(v))
}

pub const OPT_BLOCK2: u16 = 23;
pub const OPT_BLOCK1: u16 = 27;
pub const OPT_SIZE2: u16 = 28;
pub const OPT_SIZE1: u16 = 60;

/// Incoming uploads are told apart by peer and by what they address: RFC 7959 lets a
/// client change tokens between blocks, so the token cannot be the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct AssemblyKey {
    peer: SocketAddr,
    resource: Vec<u8>,
}

impl AssemblyKey {
    pub(crate) fn new(peer: SocketAddr, packet: &Packet) -> Self {
        let mut resource = vec![u8::from(packet.header.code)];
        for number in [11u16, 15] {
            if let Some(values) = packet.get_option(number.into()) {
                for v in values {
                    resource.extend_from_slice(&number.to_be_bytes());
                    resource.extend_from_slice(&(v.len() as u32).to_be_bytes());
                    resource.extend_from_slice(v);
                }
            }
        }
        Self { peer, resource }
    }
}

#[derive(Debug)]
struct Assembly {
    body: Vec<u8>,
    expires: Instant,
}

/// What the endpoint answers to one Block1 block of an incoming request.
#[derive(Debug, PartialEq)]
pub(crate) enum Block1Outcome {
    /// Answer 2.31 with this Block1 value.
    Continue(BlockOpt),
    /// The last block arrived: deliver this body; echo this Block1 in the final response.
    Complete(Vec<u8>, BlockOpt),
    /// Answer with this error code, diagnostic and (for 4.13) Size1.
    Reject(ResponseType, &'static str, Option<u32>),
}

/// Bounded set of uploads in progress, each forgotten `lifetime` after its last block.
#[derive(Debug)]
pub(crate) struct Assemblies {
    map: HashMap<AssemblyKey, Assembly>,
    cap: usize,
}

pub(crate) struct Limits {
    pub preferred_szx: u8,
    pub max_body: usize,
    pub lifetime: Duration,
}

impl Assemblies {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            cap,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn offer(
        &mut self,
        now: Instant,
        key: AssemblyKey,
        block: BlockOpt,
        payload: &[u8],
        size1: Option<u32>,
        limits: &Limits,
    ) -> Block1Outcome {
        let too_large = Block1Outcome::Reject(
            ResponseType::RequestEntityTooLarge,
            "request body too large",
            Some(u32::try_from(limits.max_body).unwrap_or(u32::MAX)),
        );
        if block.more && payload.len() != block.size() {
            self.map.remove(&key);
            return Block1Outcome::Reject(
                ResponseType::BadRequest,
                "block payload does not match its size exponent",
                None,
            );
        }
        if block.num == 0 {
            if size1.is_some_and(|s| s as usize > limits.max_body) {
                self.map.remove(&key);
                return too_large;
            }
            if !block.more {
                self.map.remove(&key);
                return Block1Outcome::Complete(payload.to_vec(), block);
            }
            if !self.map.contains_key(&key) && self.map.len() >= self.cap {
                return Block1Outcome::Reject(
                    ResponseType::ServiceUnavailable,
                    "too many block-wise uploads in progress",
                    None,
                );
            }
            self.map.insert(
                key.clone(),
                Assembly {
                    body: Vec::new(),
                    expires: now,
                },
            );
        }
        let Some(assembly) = self.map.get_mut(&key) else {
            return Block1Outcome::Reject(
                ResponseType::RequestEntityIncomplete,
                "no upload in progress for this block",
                None,
            );
        };
        let offset = block.offset();
        if offset != assembly.body.len() {
            // A retransmitted earlier block is answered by dedup before it gets here, so
            // a mismatch means a lost or reordered block: the client must start over.
            self.map.remove(&key);
            return Block1Outcome::Reject(
                ResponseType::RequestEntityIncomplete,
                "block out of order",
                None,
            );
        }
        if assembly.body.len().saturating_add(payload.len()) > limits.max_body {
            self.map.remove(&key);
            return too_large;
        }
        assembly.body.extend_from_slice(payload);
        assembly.expires = now.checked_add(limits.lifetime).unwrap_or(now);
        if block.more {
            // Ask for smaller blocks from here on if the client's are larger than we like
            // (RFC 7959 §2.3): the client renumbers from the byte offset.
            let szx = block.szx.min(limits.preferred_szx);
            let num = if szx == block.szx {
                block.num
            } else {
                let next = assembly.body.len() >> (u32::from(szx) + 4);
                u32::try_from(next.saturating_sub(1)).unwrap_or(MAX_NUM)
            };
            Block1Outcome::Continue(BlockOpt {
                num,
                more: true,
                szx,
            })
        } else {
            let body = self.map.remove(&key).map(|a| a.body).unwrap_or_default();
            Block1Outcome::Complete(body, block)
        }
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        self.map.retain(|_, a| a.expires > now);
    }

    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.map.values().map(|a| a.expires).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_option_round_trips_and_rejects_szx7() {
        for (num, more, szx) in [
            (0, false, 0),
            (1, true, 6),
            (15, false, 2),
            (MAX_NUM, true, 4),
        ] {
            let b = BlockOpt { num, more, szx };
            assert_eq!(BlockOpt::decode(&b.encode()), Ok(b));
        }
        assert_eq!(
            BlockOpt {
                num: 0,
                more: false,
                szx: 0
            }
            .encode(),
            Vec::<u8>::new()
        );
        assert_eq!(
            BlockOpt {
                num: 1,
                more: true,
                szx: 6
            }
            .encode(),
            vec![0x1E]
        );
        assert_eq!(BlockOpt::decode(&[0x07]), Err(BlockError::ReservedSzx));
        assert_eq!(BlockOpt::decode(&[0, 0, 0, 1]), Err(BlockError::TooLong));
        assert_eq!(
            BlockOpt {
                num: 3,
                more: false,
                szx: 2
            }
            .offset(),
            3 * 64
        );
    }
}
