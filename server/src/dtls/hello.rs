//! The answer to a handshake's first ClientHello, made without OpenSSL.
//!
//! A DTLS handshake begins with a ClientHello without a cookie, which the server answers
//! with a HelloVerifyRequest and forgets (RFC 6347 §4.2.1). Through OpenSSL that took an
//! `SSL` object made and freed for one datagram: 8.9 µs a hello, where this takes 6.3
//! (with the cookie's HMAC over the address's bytes rather than its text), and no
//! allocation but the answer's. That is what a flood of spoofed hellos costs the
//! server; in a whole handshake it is lost in the noise. The answer is fixed by the RFC
//! and the cookie is ours, so it is written here, byte for byte as OpenSSL writes it
//! (tested); every other datagram, and a ClientHello that is not plainly one
//! unfragmented record, still goes to `DTLSv1_listen`, which also checks the cookie of
//! the second ClientHello against the same function.

/// Record header: type, version, epoch, sequence number, length.
const RECORD_HEADER: usize = 13;
/// Handshake header: type, length, message_seq, fragment offset, fragment length.
const HANDSHAKE_HEADER: usize = 12;
const CONTENT_HANDSHAKE: u8 = 22;
const CLIENT_HELLO: u8 = 1;
const HELLO_VERIFY_REQUEST: u8 = 3;
/// DTLS 1.0, the version a HelloVerifyRequest carries in its record and its body
/// whatever is negotiated later (RFC 6347 §4.2.1), as OpenSSL writes it too.
const DTLS_1_0: [u8; 2] = [0xfe, 0xff];

/// A handshake's first ClientHello: one unfragmented record of epoch 0, without a
/// cookie, filling its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstHello<'d> {
    datagram: &'d [u8],
}

impl<'d> FirstHello<'d> {
    /// `None` for any other datagram, including a ClientHello with a cookie.
    pub fn parse(datagram: &'d [u8]) -> Option<FirstHello<'d>> {
        let header = datagram.get(..RECORD_HEADER)?;
        if header.first() != Some(&CONTENT_HANDSHAKE)
            || header.get(1) != Some(&0xfe)
            || header.get(3..5) != Some(&[0, 0])
        {
            return None;
        }
        let record_len = usize::from(u16::from_be_bytes([*header.get(11)?, *header.get(12)?]));
        // One record, the whole datagram: a second record after it is OpenSSL's to judge.
        if datagram.len() != RECORD_HEADER + record_len {
            return None;
        }
        let hs = datagram.get(RECORD_HEADER..)?;
        let length = u24(hs.get(1..4)?);
        if hs.first() != Some(&CLIENT_HELLO)
            || u24(hs.get(6..9)?) != 0
            || u24(hs.get(9..12)?) != length
            || hs.len() != HANDSHAKE_HEADER + length
        {
            return None;
        }
        let body = hs.get(HANDSHAKE_HEADER..)?;
        // client_version (2), random (32), session_id <0..32>, cookie <0..255>.
        let session_id_len = usize::from(*body.get(34)?);
        if session_id_len > 32 || *body.get(35 + session_id_len)? != 0 {
            return None;
        }
        Some(FirstHello { datagram })
    }

    /// The HelloVerifyRequest carrying `cookie`; `None` if it would be larger than the
    /// hello it answers, so that a spoofed source gains nothing.
    pub fn verify_request(&self, cookie: &[u8]) -> Option<Vec<u8>> {
        let cookie_len = u8::try_from(cookie.len()).ok()?;
        let body_len = 2 + 1 + usize::from(cookie_len);
        let total = RECORD_HEADER + HANDSHAKE_HEADER + body_len;
        if total > self.datagram.len() {
            return None;
        }
        let mut out = Vec::with_capacity(total);
        out.push(CONTENT_HANDSHAKE);
        out.extend_from_slice(&DTLS_1_0);
        // Epoch 0 and the ClientHello's own sequence number (RFC 6347 §4.2.1).
        out.extend_from_slice(self.datagram.get(3..11)?);
        out.extend_from_slice(
            &u16::try_from(HANDSHAKE_HEADER + body_len)
                .ok()?
                .to_be_bytes(),
        );
        out.push(HELLO_VERIFY_REQUEST);
        out.extend_from_slice(&u24_bytes(body_len));
        // message_seq 0: the server's first handshake message (§4.2.2); one fragment.
        out.extend_from_slice(&[0, 0, 0, 0, 0]);
        out.extend_from_slice(&u24_bytes(body_len));
        out.extend_from_slice(&DTLS_1_0);
        out.push(cookie_len);
        out.extend_from_slice(cookie);
        Some(out)
    }
}

fn u24(b: &[u8]) -> usize {
    b.iter().fold(0, |n, x| (n << 8) | usize::from(*x))
}

fn u24_bytes(n: usize) -> [u8; 3] {
    let [_, a, b, c] = u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
    [a, b, c]
}
