//! The few OpenSSL calls the `openssl` crate does not wrap: the stateless cookie exchange
//! (`DTLSv1_listen`), DTLS retransmission timers (macros over `SSL_ctrl`) and the initial
//! retransmission timeout (`DTLS_set_timer_cb`), and whether records wait unread
//! (`SSL_has_pending`).
//!
//! Each wrapper takes a live `SslRef`, so the pointers handed to OpenSSL are valid for the
//! call; nothing here keeps a pointer past it. A shared reference suffices, as for the
//! crate's own calls: OpenSSL's objects are opaque and mutated only through its API.

use std::time::Duration;

use foreign_types::ForeignTypeRef;
use libc::{c_int, c_long, c_uint, c_void, timeval};
use openssl::ssl::{SslContextRef, SslRef};

/// `DTLS_CTRL_GET_TIMEOUT` and `DTLS_CTRL_HANDLE_TIMEOUT` of `ssl.h`.
const DTLS_CTRL_GET_TIMEOUT: c_int = 73;
const DTLS_CTRL_HANDLE_TIMEOUT: c_int = 74;

#[allow(non_camel_case_types)]
type BIO_ADDR = c_void;
#[allow(non_camel_case_types)]
type DTLS_timer_cb = unsafe extern "C" fn(ssl: *mut openssl_sys::SSL, timer_us: c_uint) -> c_uint;

extern "C" {
    fn DTLSv1_listen(ssl: *mut openssl_sys::SSL, client: *mut BIO_ADDR) -> c_int;
    fn BIO_ADDR_new() -> *mut BIO_ADDR;
    fn BIO_ADDR_free(addr: *mut BIO_ADDR);
    fn DTLS_set_timer_cb(ssl: *mut openssl_sys::SSL, cb: Option<DTLS_timer_cb>);
    fn SSL_CTX_set_timeout(ctx: *mut openssl_sys::SSL_CTX, t: c_long) -> c_long;
    fn SSL_CTX_flush_sessions(ctx: *mut openssl_sys::SSL_CTX, t: c_long);
    fn SSL_has_pending(ssl: *const openssl_sys::SSL) -> c_int;
}

/// Whether OpenSSL holds bytes of the last datagram it read that no read has returned
/// yet: another record of the same datagram, or the rest of a record.
pub fn has_pending(ssl: &SslRef) -> bool {
    // SAFETY: `ssl` is live; the call only reads the record layer's counters.
    unsafe { SSL_has_pending(ssl.as_ptr()) == 1 }
}

/// How long a cached session may be resumed.
pub fn set_session_lifetime(ctx: &SslContextRef, lifetime: Duration) {
    let secs = c_long::try_from(lifetime.as_secs()).unwrap_or(c_long::MAX);
    // SAFETY: `ctx` is live; the call only stores the value.
    let _ = unsafe { SSL_CTX_set_timeout(ctx.as_ptr(), secs) };
}

/// Marks close_notify as sent without sending it. OpenSSL takes an established session
/// freed without it for a broken one and forbids its resumption; a device that simply
/// goes to sleep has broken nothing.
pub fn quiet_shutdown(ssl: &SslRef) {
    // SAFETY: `ssl` is live; the call sets a flag.
    unsafe { openssl_sys::SSL_set_shutdown(ssl.as_ptr(), openssl_sys::SSL_SENT_SHUTDOWN) };
}

/// Drops every cached session: nothing cached before may be resumed.
pub fn flush_sessions(ctx: &SslContextRef) {
    // SAFETY: `ctx` is live; sessions "expired" by the far future are all of them.
    unsafe { SSL_CTX_flush_sessions(ctx.as_ptr(), c_long::MAX) };
}

/// What `DTLSv1_listen` made of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// A ClientHello with a valid cookie: the handshake may go on with this `Ssl`.
    Verified,
    /// A HelloVerifyRequest was written (or the datagram was dropped); keep no state.
    NotYet,
    /// A fatal error: drop the `Ssl`.
    Failed,
}

/// Runs the stateless cookie exchange on one datagram already queued on `ssl`'s BIO.
pub fn listen(ssl: &SslRef) -> Listen {
    // OpenSSL 3.0 crashes on a null BIO_ADDR: hand it one, and free it after.
    // SAFETY: BIO_ADDR_new returns an owned address or null; it is freed below.
    let addr = unsafe { BIO_ADDR_new() };
    if addr.is_null() {
        return Listen::Failed;
    }
    // SAFETY: `ssl` is a live SSL for the duration of the call; `addr` is a valid BIO_ADDR.
    let r = unsafe { DTLSv1_listen(ssl.as_ptr(), addr) };
    // SAFETY: `addr` came from BIO_ADDR_new and is not used after.
    unsafe { BIO_ADDR_free(addr) };
    match r {
        1.. => Listen::Verified,
        0 => Listen::NotYet,
        _ => Listen::Failed,
    }
}

/// Time left until the DTLS retransmission timer fires, if one runs.
pub fn timeout(ssl: &SslRef) -> Option<Duration> {
    let mut tv = timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: DTLS_CTRL_GET_TIMEOUT writes one `struct timeval` through the pointer.
    let running = unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_GET_TIMEOUT,
            0,
            (&mut tv as *mut timeval).cast(),
        )
    };
    if running <= 0 {
        return None;
    }
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u64::try_from(tv.tv_usec).unwrap_or(0);
    Some(Duration::from_secs(secs) + Duration::from_micros(micros))
}

/// Lets OpenSSL retransmit its last flight if the timer is due.
pub fn handle_timeout(ssl: &SslRef) {
    // SAFETY: DTLS_CTRL_HANDLE_TIMEOUT takes no argument.
    let _ = unsafe {
        openssl_sys::SSL_ctrl(
            ssl.as_ptr(),
            DTLS_CTRL_HANDLE_TIMEOUT,
            0 as c_long,
            std::ptr::null_mut(),
        )
    };
}

/// Initial retransmission timeout in microseconds, doubled on each retry up to OpenSSL's
/// cap of 60 s; read by [`timer_cb`].
static INITIAL_US: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1_000_000);

unsafe extern "C" fn timer_cb(_ssl: *mut openssl_sys::SSL, timer_us: c_uint) -> c_uint {
    if timer_us == 0 {
        INITIAL_US.load(std::sync::atomic::Ordering::Relaxed)
    } else {
        timer_us.saturating_mul(2).min(60_000_000)
    }
}

/// Sets the first retransmission timeout of `ssl`'s handshakes (RFC 6347 §4.2.4.1 suggests
/// 1 s; the value is process-wide, the last one set wins).
pub fn set_initial_timeout(ssl: &mut SslRef, initial: Duration) {
    let us = u32::try_from(initial.as_micros())
        .unwrap_or(u32::MAX)
        .max(1_000);
    INITIAL_US.store(us, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: `ssl` is live; the callback is a plain function with the expected signature.
    unsafe { DTLS_set_timer_cb(ssl.as_ptr(), Some(timer_cb)) };
}
