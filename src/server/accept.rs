//! New connections: accepting (paused while descriptors run out) and admission.

use std::io;
use std::time::Duration;

use mio::Interest;

use super::Server;
use super::admission::{ConnError, Verdict};
use super::conn::{HttpConn, Phase};
use crate::http::{ApiError, Format};
use crate::reactor::Target;
use crate::reactor::net::Stream;
use crate::reactor::timers::Timer;

impl Server {
    pub(super) fn accept(&mut self, i: usize) {
        if self.accepting.paused {
            return;
        }
        loop {
            let Some(l) = self.accepting.listeners.get(i).and_then(|l| l.as_ref()) else {
                return;
            };
            match l.accept() {
                Ok((stream, peer, ip)) => {
                    if self.accepting.exhausted {
                        self.accepting.exhausted = false;
                        log::info!("accept: descriptors available again, accepting");
                    }
                    self.add_conn(stream, peer, ip)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE)
                            | Some(libc::ENFILE)
                            | Some(libc::ENOBUFS)
                            | Some(libc::ENOMEM)
                    ) =>
                {
                    // Out of descriptors: stop accepting for a moment instead of spinning on a
                    // listener that stays readable.
                    if self.accepting.exhausted {
                        log::debug!("accept: {e}; still pausing new connections");
                    } else {
                        log::warn!("accept: {e}; pausing new connections, retrying every 100 ms");
                        self.accepting.exhausted = true;
                    }
                    self.accepting.paused = true;
                    self.reactor
                        .timers
                        .after(Duration::from_millis(100), Timer::ResumeAccept);
                    return;
                }
                Err(e) => {
                    log::warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    pub(super) fn add_conn(&mut self, stream: Stream, peer: String, ip: Option<std::net::IpAddr>) {
        let open = self.conns.len() + self.ops.len();
        let mut conn = HttpConn::new(stream, peer, ip, &self.cfg.limits);
        match self.admission.admit(ip, open, &self.cfg.limits) {
            Verdict::Admit => {}
            Verdict::Evict(oldest, why) => {
                if let Some(c) = self.conns.get_mut(&oldest) {
                    log::debug!("{}: unauthenticated, closed to make room", c.peer);
                    let resp = ApiError::from(why).into_response(Format::Json);
                    c.discard_input();
                    c.respond(&resp, false, true);
                    let _ = c.flush();
                }
                self.close_conn(oldest);
            }
            Verdict::Full => match self.longest_idle() {
                // Closing an idle keep-alive connection is ordinary HTTP (its client opens a
                // new one when it needs it); refusing the newcomer would let whoever holds
                // the slots keep everyone else out.
                Some(idle) => {
                    if let Some(c) = self.conns.get(&idle) {
                        log::debug!("{}: idle, closed to make room", c.peer);
                    }
                    self.close_conn(idle);
                }
                None => {
                    // A canned answer, best effort: the socket is new, so its buffer has room.
                    log::debug!("{}: refused: too many connections", conn.peer);
                    let resp = ApiError::from(ConnError::TooMany).into_response(Format::Json);
                    conn.respond(&resp, false, true);
                    let _ = conn.flush();
                    return;
                }
            },
        }
        let token = self.token();
        if let Err(e) =
            self.reactor
                .poll
                .registry()
                .register(&mut conn.stream, token, Interest::READABLE)
        {
            log::warn!("register connection: {e}");
            return;
        }
        conn.interest = Some(Interest::READABLE);
        self.reactor.routes.insert(token, Target::Conn);
        let limits = &self.cfg.limits;
        self.reactor.timers.after(
            limits
                .head_timeout
                .min(limits.idle_timeout)
                .min(limits.preauth_timeout),
            Timer::Conn(token),
        );
        self.admission.add(token, conn.peer_ip);
        self.conns.insert(token, conn);
        // Data may already be there (edge-triggered registration sees only new readiness on
        // some kernels' paths); reading now costs one syscall.
        self.drive_conn(token);
    }

    /// The connection idle the longest: keep-alive, nothing in flight, nothing buffered
    /// either way. A linear scan, run only when every slot is taken.
    fn longest_idle(&self) -> Option<mio::Token> {
        self.conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Open && !c.has_partial_request() && !c.unsent())
            .min_by_key(|(_, c)| c.idle_since)
            .map(|(t, _)| *t)
    }
}
