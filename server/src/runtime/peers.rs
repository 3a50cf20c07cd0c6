//! Which registration each peer address belongs to, for a Send, which names no
//! registration.
//!
//! A million devices each have an entry, so the key is packed: a `(Transport,
//! SocketAddr)` takes 36 bytes and pads the table's slot to 56, the packed key 23 in a
//! slot of 40 (about 35 bytes a device less, counting the table's empty slots).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::registry::Transport;

/// A transport and an address, byte for byte: the IPv6 form of the address (IPv4 as
/// mapped), the port, the IPv6 scope (link-local peers on two interfaces are two
/// peers), and a tag for the transport and whether the address was IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PeerKey {
    ip: [u8; 16],
    port: [u8; 2],
    scope: [u8; 4],
    tag: u8,
}

impl PeerKey {
    fn new(transport: Transport, peer: SocketAddr) -> PeerKey {
        let transport_bit = match transport {
            Transport::Udp => 0,
            Transport::Dtls => 1,
        };
        let (ip, scope, v4) = match peer {
            SocketAddr::V4(a) => (a.ip().to_ipv6_mapped(), 0, 2),
            SocketAddr::V6(a) => (*a.ip(), a.scope_id(), 0),
        };
        PeerKey {
            ip: ip.octets(),
            port: peer.port().to_be_bytes(),
            scope: scope.to_be_bytes(),
            tag: transport_bit | v4,
        }
    }
}

/// Registration ids by the transport and address their device last spoke from.
#[derive(Debug, Default)]
pub(crate) struct PeerIndex {
    ids: HashMap<PeerKey, Arc<str>>,
}

impl PeerIndex {
    pub fn get(&self, transport: Transport, peer: SocketAddr) -> Option<&Arc<str>> {
        self.ids.get(&PeerKey::new(transport, peer))
    }

    pub fn insert(&mut self, transport: Transport, peer: SocketAddr, id: Arc<str>) {
        self.ids.insert(PeerKey::new(transport, peer), id);
    }

    pub fn remove(&mut self, transport: Transport, peer: SocketAddr) {
        self.ids.remove(&PeerKey::new(transport, peer));
    }

    /// Removes the entry only if it is still `id`'s: another device may have taken the
    /// address since (a NAT hands ports out again).
    pub fn remove_if(&mut self, transport: Transport, peer: SocketAddr, id: &str) {
        let key = PeerKey::new(transport, peer);
        if self.ids.get(&key).is_some_and(|r| **r == *id) {
            self.ids.remove(&key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv6Addr, SocketAddrV6};

    /// The address a key was made from.
    fn addr(key: &PeerKey) -> SocketAddr {
        let ip = Ipv6Addr::from(key.ip);
        let port = u16::from_be_bytes(key.port);
        match (key.tag & 2 != 0, ip.to_ipv4_mapped()) {
            (true, Some(v4)) => SocketAddr::new(IpAddr::V4(v4), port),
            _ => SocketAddr::V6(SocketAddrV6::new(
                ip,
                port,
                0,
                u32::from_be_bytes(key.scope),
            )),
        }
    }

    #[test]
    fn keys_tell_transports_families_ports_and_scopes_apart() {
        let v4: SocketAddr = "127.0.0.1:5683".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:5683".parse().unwrap();
        let scoped_a = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 5683, 0, 1));
        let scoped_b = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 5683, 0, 2));
        let other_port: SocketAddr = "127.0.0.1:5684".parse().unwrap();
        let keys = [
            PeerKey::new(Transport::Udp, v4),
            PeerKey::new(Transport::Dtls, v4),
            PeerKey::new(Transport::Udp, mapped),
            PeerKey::new(Transport::Udp, scoped_a),
            PeerKey::new(Transport::Udp, scoped_b),
            PeerKey::new(Transport::Udp, other_port),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        for a in [v4, mapped, scoped_a, other_port] {
            assert_eq!(addr(&PeerKey::new(Transport::Udp, a)), a);
        }
        assert!(size_of::<(PeerKey, Arc<str>)>() <= 40);
    }

    #[test]
    fn an_entry_is_removed_only_by_its_own_registration() {
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut index = PeerIndex::default();
        index.insert(Transport::Udp, peer, Arc::from("a"));
        index.remove_if(Transport::Udp, peer, "b");
        assert_eq!(index.get(Transport::Udp, peer).map(|s| &**s), Some("a"));
        assert!(index.get(Transport::Dtls, peer).is_none());
        index.remove_if(Transport::Udp, peer, "a");
        assert_eq!(index.len(), 0);
    }
}
