//! Driving one connection: read, hand complete requests on, write, and its deadlines
//! (pre-auth, head, idle).

use std::time::Instant;

use mio::Token;

use super::Server;
use super::admission::ConnError;
use super::conn::{Awaiting, Next, Phase};
use super::request::Outcome;
use crate::http::request::Request;
use crate::http::response::{Accept, DOCUMENT};
use crate::http::{ApiError, Format, Method};

/// Requests one connection may have handled per wake before the others get their turn: a
/// client pipelining thousands of requests does not hold the loop until its output blocks.
const REQUESTS_PER_WAKE: usize = 16;
use crate::reactor::log::RequestLog;
use crate::reactor::net::ByteStream;
use crate::reactor::timers::Timer;

impl Server {
    pub(super) fn check_conn_deadlines(&mut self, token: Token, now: Instant) {
        let limits = &self.cfg.limits;
        let Some(c) = self.conns.get(&token) else {
            return;
        };
        // Until a request passes auth a connection lives only briefly, whatever it does.
        if !c.authenticated && !matches!(c.phase, Phase::Waiting(_)) {
            let until = c.opened + limits.preauth_timeout;
            if now >= until {
                log::debug!("{}: no authenticated request in time, closing", c.peer);
                if c.phase == Phase::Open && c.has_partial_request() {
                    self.fail_conn(token, ConnError::Timeout.into());
                    // A client that does not read its 408 is not waited for.
                    if self
                        .conns
                        .get(&token)
                        .is_some_and(|c| c.pending_output() > 0)
                    {
                        self.close_conn(token);
                    }
                } else {
                    self.close_conn(token);
                }
                return;
            }
            self.reactor.timers.at(until, Timer::Conn(token));
        }
        let mut deadline = match c.phase {
            // Complete pipelined requests wait for the client to read its answers: not a slow
            // head, but a client that stopped reading is dropped after the idle timeout.
            Phase::Open if c.output_blocked() => Some((c.idle_since + limits.idle_timeout, false)),
            Phase::Open if c.has_partial_request() => {
                c.request_started.map(|s| (s + limits.head_timeout, true))
            }
            Phase::Open if !c.unsent() => Some((c.idle_since + limits.idle_timeout, false)),
            _ => None,
        };
        // A queued answer that makes no write progress (a client that stopped reading) is not
        // kept for the idle timeout: it pins its memory.
        if c.unsent() {
            let stall = c.write_progress + limits.write_timeout;
            if deadline.is_none_or(|(when, _)| stall < when) {
                deadline = Some((stall, false));
            }
        }
        match deadline {
            Some((when, _)) if when > now => self.reactor.timers.at(when, Timer::Conn(token)),
            Some((_, true)) => self.fail_conn(token, ConnError::Timeout.into()),
            Some((_, false)) => {
                if c.pending_output() > 0 {
                    log::info!("{}: answers not read in time, closing", c.peer);
                }
                self.close_conn(token)
            }
            // Busy (waiting for an operation or writing): look again later.
            None => self
                .reactor
                .timers
                .after(limits.idle_timeout, Timer::Conn(token)),
        }
    }

    pub(super) fn close_conn(&mut self, token: Token) {
        self.admission.remove(token);
        self.admission.release(token);
        if let Some(mut c) = self.conns.remove(&token) {
            c.stream.close_notify();
            let _ = self.reactor.poll.registry().deregister(&mut c.stream);
            self.reactor.routes.remove(&token);
            if let Phase::Waiting(op) = c.phase {
                self.client_gone(op);
            }
        }
    }

    /// Answer with an error and close (the input cannot be trusted to frame another request).
    pub(super) fn fail_conn(&mut self, token: Token, err: ApiError) {
        if let Some(c) = self.conns.get_mut(&token) {
            log::info!("{} - {} {}", c.peer, err.status, err.message);
            c.respond(&err.into_response(Format::Json), false, true);
        }
        self.drive_conn(token);
    }

    /// Read, handle complete requests, write — until nothing more can happen now.
    pub(super) fn drive_conn(&mut self, token: Token) {
        self.driving.push(token);
        self.drive_conn_now(token);
        self.driving.pop();
    }

    pub(super) fn drive_conn_now(&mut self, token: Token) {
        let mut handled = 0;
        loop {
            let Some(c) = self.conns.get_mut(&token) else {
                return;
            };
            if let Err(e) = c.fill(self.reactor.scratch()) {
                // A failed TLS handshake is worth a line (a client without the right CA or
                // certificate sees only an alert); a reset connection is not.
                match crate::tls::protocol_error(&e) {
                    Some(tls) => log::info!("{}: {tls}", c.peer),
                    None => log::debug!("{}: {e}", c.peer),
                }
                self.close_conn(token);
                return;
            }
            // EOF while an operation works for this request: the client has gone (as Go's
            // net/http treats it). The operation is cancelled: an exec's process group is
            // killed, a pending connect is dropped.
            if c.read_eof && matches!(c.phase, Phase::Waiting(_)) {
                self.close_conn(token);
                return;
            }
            let mut progressed = false;
            let mut yielded = false;
            loop {
                let Some(c) = self.conns.get_mut(&token) else {
                    return;
                };
                if handled >= REQUESTS_PER_WAKE {
                    yielded = true;
                    break;
                }
                match c.next_request() {
                    Next::Nothing => break,
                    Next::Invalid(e) => {
                        let err = ApiError::from(e);
                        log::info!("{} - {} {}", c.peer, err.status, err.message);
                        c.respond(&err.into_response(Format::Json), false, true);
                        break;
                    }
                    Next::Head(head) => {
                        progressed = true;
                        self.admit_body(token, head);
                    }
                    Next::Request(req) => {
                        progressed = true;
                        handled += 1;
                        if self.handle(token, req) {
                            // Upgraded: the connection is no longer ours.
                            return;
                        }
                    }
                }
            }
            let Some(c) = self.conns.get_mut(&token) else {
                return;
            };
            let blocked = c.output_blocked();
            match c.flush() {
                Ok(_) => {}
                Err(_) => {
                    self.close_conn(token);
                    return;
                }
            }
            // Pipelined requests already buffered wait for output room, not for new input:
            // once the client has read enough, handle them now (no readable edge will come
            // for bytes we already hold).
            let unblocked = blocked && !c.output_blocked();
            if c.finished() {
                if c.phase == Phase::Closing {
                    let _ = c.stream.shutdown(std::net::Shutdown::Write);
                }
                self.close_conn(token);
                return;
            }
            if self.life.draining.is_some()
                && c.phase == Phase::Open
                && !c.has_partial_request()
                && !c.unsent()
            {
                self.close_conn(token);
                return;
            }
            // Budget spent with requests perhaps left: resume after the other events (no
            // readiness edge will come for bytes already read).
            let resume = yielded && c.phase == Phase::Open && !c.output_blocked();
            if resume || !(c.should_refill() || (progressed && c.phase == Phase::Open) || unblocked)
            {
                let want = c.wanted_interest();
                if c.interest != Some(want) {
                    if self
                        .reactor
                        .poll
                        .registry()
                        .reregister(&mut c.stream, token, want)
                        .is_err()
                    {
                        self.close_conn(token);
                        return;
                    }
                    c.interest = Some(want);
                }
                if c.phase == Phase::Open && !c.has_partial_request() {
                    c.shrink();
                }
                if resume && !c.queued {
                    c.queued = true;
                    self.ready.push_back(token);
                }
                return;
            }
        }
    }

    /// Handle one request. Returns true when the connection was upgraded (taken away).
    pub(super) fn handle(&mut self, token: Token, req: Request) -> bool {
        // Fault injection for the test of `contained`; compiled out of release builds.
        #[cfg(debug_assertions)]
        if std::env::var_os("SUPD_DEBUG_PANIC_PATH").is_some_and(|p| p == req.path.as_str()) {
            panic!("SUPD_DEBUG_PANIC_PATH was requested");
        }
        let started = Instant::now();
        // `Accept` is parsed once: errors and state answers pick from it here, exec's output
        // in its decoder.
        let accept = Accept::parse(req.header("accept"));
        let format = accept.pick(DOCUMENT);
        let head_only = req.method == Method::Head;
        let outcome = self.route_request(token, &req, accept, format);
        let Some(c) = self.conns.get_mut(&token) else {
            return true;
        };
        let close = !req.keep_alive || self.life.draining.is_some();
        let status = match outcome {
            Outcome::Respond(resp) => {
                c.respond(&resp, head_only, close);
                resp.status
            }
            Outcome::Error(err) => {
                let status = err.status;
                // A client without a valid token gets one answer per connection: retrying on
                // it must not keep a slot; nor does one over its token's cap.
                let close = close || status == 401 || c.refused;
                c.respond(&err.into_response(format), head_only, close);
                status
            }
            Outcome::Pending(op) => {
                c.phase = Phase::Waiting(op);
                // The answer (or upgrade) comes later: the connection keeps what it needs then.
                c.awaiting = Some(Awaiting {
                    log: RequestLog::new(&c.peer, &req, started),
                    keep_alive: req.keep_alive,
                });
                self.drive_op(op, None);
                // An upgrade in that drive took the connection away.
                return !self.conns.contains_key(&token);
            }
            Outcome::Upgraded => return true,
        };
        RequestLog::new(&c.peer, &req, started).done(status);
        false
    }
}
