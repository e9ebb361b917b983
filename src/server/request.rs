//! A request's path: gate (route, method, credentials), body admission, then an answer from
//! the mirror's state or an operation started; the operation's answer or upgrade is delivered
//! to the connection that waits for it.

use std::rc::Rc;
use std::time::Instant;

use mio::{Interest, Token};

use super::conn::{HttpConn, Phase};
use super::{Server, TokenState};
use crate::auth::{self, Decision};
use crate::http::query::Query;
use crate::http::request::Request;
use crate::http::response::{Accept, DOCUMENT};
use crate::http::router::{self, Route};
use crate::http::{ApiError, Format, Method, Response};
use crate::ops;
use crate::reactor::Target;
use crate::reactor::log::RequestLog;
use crate::reactor::net::Stream;
use crate::reactor::timers::Timer;
use crate::sites;
use crate::ws::handshake;

impl Server {
    /// A request with a body, its head complete: its body is read only if the request would
    /// be served (route, method, credentials) and its declared length fits the endpoint;
    /// otherwise it is answered now, the body unread, and the connection closed (the body's
    /// bytes would otherwise be taken for the next request).
    pub(super) fn admit_body(&mut self, token: Token, head: Request) {
        let started = Instant::now();
        // The head moves into the parser below; its `Accept` is kept, unparsed, for a refusal's
        // answer, so that an admitted request's is parsed once, in `handle`.
        let accept = head.header("accept").map(str::to_owned);
        let limit = match self.gate(token, &head) {
            Ok(Gate::Route(route, _)) => Ok(route.endpoint.body_limit()),
            // OPTIONS is answered without credentials; it has no use for a body.
            Ok(Gate::Options(_)) => Ok(0),
            Err(e) => Err(e),
        };
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let head_only = head.method == Method::Head;
        let log = RequestLog::new(&c.peer, &head, started);
        // A limit of 0 refuses any declared length at once; an empty chunked body passes.
        let refused = match limit {
            Ok(limit) => c
                .continue_body(head, limit.min(self.cfg.limits.body_bytes))
                .map_err(ApiError::from),
            Err(e) => Err(e),
        };
        if let Err(err) = refused {
            let format = Accept::parse(accept.as_deref()).pick(DOCUMENT);
            let status = err.status;
            c.discard_input();
            c.respond(&err.into_response(format), head_only, true);
            log.done(status);
        }
    }

    /// What every request passes before anything is done for it: its route, its method and
    /// its credentials, in that order. OPTIONS needs no credentials (and does not count as
    /// authenticated activity).
    pub(super) fn gate(
        &mut self,
        token: Token,
        req: &Request,
    ) -> std::result::Result<Gate, ApiError> {
        let route = router::route(&req.path)?;
        if req.method == Method::Options {
            return Ok(Gate::Options(
                Response::new(204).header("Allow", route.allow()),
            ));
        }
        if !route.allows(req.method) {
            return Err(router::MethodNotAllowed {
                method: req.method,
                allow: route.allow(),
            }
            .into());
        }
        let name = self.authorize(req, &route)?;
        if let Err(e) = self.admission.claim(token, &name, &self.cfg.limits) {
            // Over its token's cap: refused and closed, so the holder's own connections do
            // not linger on it (counted here, when a request shows which token it is).
            if let Some(c) = self.conns.get_mut(&token) {
                c.refused = true;
            }
            return Err(e.into());
        }
        if let Some(c) = self.conns.get_mut(&token)
            && !c.authenticated
        {
            c.authenticated = true;
            self.admission.remove(token);
        }
        Ok(Gate::Route(route, name))
    }

    pub(super) fn route_request(
        &mut self,
        token: Token,
        req: &Request,
        accept: Accept,
        format: Format,
    ) -> Outcome {
        let (route, name) = match self.gate(token, req) {
            Ok(Gate::Route(route, name)) => (route, name),
            Ok(Gate::Options(resp)) => return Outcome::Respond(resp),
            Err(e) => return Outcome::Error(e),
        };
        // Authorized here, with the endpoint's own permission: only now may it go on.
        match self.peer_for(req) {
            Ok(Some((peer, hops))) => return self.start_forward(req, peer, &name, hops, format),
            Ok(None) => {}
            Err(e) => return Outcome::Error(e.into()),
        }
        let call = match ops::decode(&route, req, &ops::DecodeCtx::new(&self.cfg, accept)) {
            Ok(c) => c,
            Err(e) => return Outcome::Error(e.into()),
        };
        match call {
            ops::Call::State(params) => {
                // Guest agents change what a VM shows without the mirror knowing.
                let generation = self.mirror.generation().wrapping_add(self.vms.generation());
                if let Some(r) = self
                    .state_cache
                    .get(generation, &req.path, &req.query, format)
                {
                    return Outcome::Respond(r);
                }
                // The guest-agent client is not wired yet: no VM has guest information.
                let guests = self.vms.guests();
                let ctx = ops::state::StateCtx {
                    mirror: &self.mirror,
                    guests: &guests,
                    tenant: &self.cfg.tenant,
                    host: &self.cfg.host,
                };
                match ops::state::answer(&params, format, &ctx) {
                    Ok(r) => {
                        self.state_cache
                            .put(generation, &req.path, &req.query, format, &r);
                        Outcome::Respond(r)
                    }
                    Err(e) => Outcome::Error(e.into()),
                }
            }
            call => self.start_op(token, req, call, format),
        }
    }

    /// The peer a request goes to: `site` naming a configured peer (absent, this site's own
    /// name, or unknown: served or refused here, by the decoder). A request that has passed
    /// too many relays is refused whatever its `site`.
    fn peer_for(
        &self,
        req: &Request,
    ) -> std::result::Result<Option<(Rc<sites::Peer>, u32)>, sites::Error> {
        let hops = sites::wire::incoming_hops(req)?;
        // A malformed query is the decoder's 400, as for a local request.
        let Ok(query) = Query::parse(&req.query) else {
            return Ok(None);
        };
        match query.single("site") {
            Ok(Some(site)) if site != self.cfg.site => match self.peers.get(site) {
                Some(peer) => Ok(Some((peer?, hops))),
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }

    fn start_forward(
        &mut self,
        req: &Request,
        peer: Rc<sites::Peer>,
        token_name: &str,
        hops: u32,
        format: Format,
    ) -> Outcome {
        // The peer checks the handshake; which browser origins may use this site is ours.
        if req.header_has_token("upgrade", "websocket")
            && let Err(e) = handshake::check_origin(
                req.header("origin"),
                req.header("host"),
                &self.cfg.ws.allowed_origins,
            )
        {
            return Outcome::Error(e.into());
        }
        let out = sites::wire::Outgoing {
            req,
            token: peer.token.as_deref(),
            forwarded_for: format!("{token_name}@{}", self.cfg.site),
            hops,
        };
        let op_token = self.token();
        // All clients are one token at the peer when the site has a token file: one client
        // must not take every place that token has there.
        if peer.token.is_some() {
            let cap = self.cfg.limits.forwards_per_token_site();
            if !self
                .admission
                .claim_site(op_token, token_name, &peer.name, cap)
            {
                return Outcome::Error(
                    sites::Error::Busy {
                        site: peer.name.clone(),
                        limit: cap,
                    }
                    .into(),
                );
            }
        }
        let started = {
            let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
            sites::Forward::start(op_token, peer.clone(), &out, format, &mut io)
        };
        match started {
            Ok(f) => {
                self.ops.insert(op_token, ops::Op::Forward(Box::new(f)));
                Outcome::Pending(op_token)
            }
            Err(e) => {
                self.admission.release(op_token);
                log::info!("forward: {e}");
                Outcome::Error(e.into())
            }
        }
    }

    pub(super) fn authorize(
        &self,
        req: &Request,
        route: &Route,
    ) -> std::result::Result<String, ApiError> {
        let tokens = match &self.tokens {
            TokenState::Ready(t) => t,
            TokenState::Sealed(why) => {
                return Err(auth::Denied::Sealed(why.to_string()).into());
            }
        };
        let bearer = req.header("authorization").and_then(auth::bearer_token);
        match tokens.check(bearer, route.operation(), &route.application) {
            Decision::Allow { token } => Ok(token.to_string()),
            Decision::Unauthorized => Err(auth::Denied::Unauthorized.into()),
            Decision::Forbidden { token } => Err(auth::Denied::Forbidden {
                token: token.to_string(),
                operation: route.operation(),
                application: route.application.clone(),
            }
            .into()),
        }
    }

    pub(super) fn start_op(
        &mut self,
        token: Token,
        req: &Request,
        call: ops::Call,
        format: Format,
    ) -> Outcome {
        let op_token = self.token();
        let start = {
            let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
            let mut env = ops::Env {
                mirror: &self.mirror,
                restarting: &self.restarting,
                vms: &mut self.vms,
            };
            ops::start(op_token, call, format, &mut env, &mut io)
        };
        match start {
            Err(e) => Outcome::Error(e),
            Ok(ops::Started::Pending(op)) => {
                if let Some(key) = op.restart_key() {
                    self.restarting.insert(key.to_string());
                }
                // Driven first by `handle`, once the connection waits for it: a first drive
                // may already answer or upgrade (a loopback connect completes at once).
                self.ops.insert(op_token, op);
                Outcome::Pending(op_token)
            }
            Ok(ops::Started::Upgrade(op, head)) => {
                self.ops.insert(op_token, op);
                let log = self
                    .conns
                    .get(&token)
                    .map(|c| RequestLog::new(&c.peer, req, Instant::now()));
                self.upgrade_conn(token, op_token, head, log);
                Outcome::Upgraded
            }
        }
    }

    /// Move a connection's stream into the websocket operation `op_token`, which writes the
    /// 101 `head` (after any earlier pipelined answers still queued) before its frames.
    pub(super) fn upgrade_conn(
        &mut self,
        token: Token,
        op_token: Token,
        head: Vec<u8>,
        log: Option<RequestLog>,
    ) {
        self.admission.remove(token);
        // The session counts for its token as the connection did.
        self.admission.transfer(token, op_token);
        let Some(mut c) = self.conns.remove(&token) else {
            return;
        };
        let _ = self.reactor.poll.registry().deregister(&mut c.stream);
        self.reactor.routes.remove(&token);
        if let Some(log) = log {
            log.done(
                self.ops
                    .get(&op_token)
                    .map_or(101, ops::Op::takeover_status),
            );
        }
        let peer = c.peer.clone();
        let (stream, leftover, pending) = c.into_upgraded();
        let Some(op) = self.ops.get_mut(&op_token) else {
            return;
        };
        let attached = {
            let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
            op.attach_client(op_token, stream, peer, pending, head, leftover, &mut io)
        };
        if let Err(e) = attached {
            log::warn!("websocket attach: {e}");
            self.admission.release(op_token);
            if let Some(mut op) = self.ops.remove(&op_token) {
                let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
                op.release(&mut io);
                op.abandon();
            }
            return;
        }
        self.drive_op(op_token, None);
    }

    /// Let an operation make progress; deliver its answer; drop it when it is done.
    pub(super) fn drive_op(&mut self, op_token: Token, ev: Option<ops::Role>) {
        self.driving.push(op_token);
        self.drive_op_now(op_token, ev);
        self.driving.pop();
    }

    pub(super) fn drive_op_now(&mut self, op_token: Token, ev: Option<ops::Role>) {
        let Some(op) = self.ops.get_mut(&op_token) else {
            return;
        };
        let progress = {
            let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
            let mut env = ops::EnvMut {
                mirror: &mut self.mirror,
                vms: &mut self.vms,
            };
            op.drive(op_token, ev, &mut io, &mut env)
        };
        self.apply_progress(op_token, progress);
    }

    /// What an operation's turn produced: its answer, an upgrade, Docker requests, its end.
    pub(super) fn apply_progress(&mut self, op_token: Token, progress: ops::Progress) {
        if let Some(reply) = progress.reply {
            self.deliver(op_token, reply);
        }
        if progress.upgrade {
            let waiting = self.waiting_conn(op_token);
            match waiting {
                Some(conn) => {
                    let log = self
                        .conns
                        .get_mut(&conn)
                        .and_then(|c| c.awaiting.take())
                        .map(|a| a.log);
                    self.upgrade_conn(conn, op_token, Vec::new(), log)
                }
                None => self.client_gone(op_token),
            }
        }
        if progress.handback {
            let back = self.ops.get_mut(&op_token).and_then(|op| {
                let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
                op.take_client(&mut io)
            });
            if let Some((stream, peer, input)) = back {
                self.resume_conn(op_token, stream, peer, input);
            }
        }
        if !progress.wants.is_empty() {
            self.apply_wants(progress.wants);
        }
        if progress.done
            && let Some(mut op) = self.ops.remove(&op_token)
        {
            self.admission.release(op_token);
            if let Some(key) = op.restart_key() {
                self.restarting.remove(key);
            }
            self.vms.release(op_token);
            let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
            op.release(&mut io);
        }
    }

    /// A connection an operation took over and gives back (a forwarded answer relayed in
    /// full): an HTTP connection again, its token's count moved back from the operation.
    fn resume_conn(&mut self, op_token: Token, stream: Stream, peer: String, input: Vec<u8>) {
        if self.life.draining.is_some() {
            // Closing a keep-alive connection between requests is ordinary HTTP.
            return;
        }
        let token = self.token();
        let mut conn = HttpConn::new(stream, peer, None, &self.cfg.limits);
        conn.resume(input);
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
            limits.head_timeout.min(limits.idle_timeout),
            Timer::Conn(token),
        );
        self.admission.transfer(op_token, token);
        self.conns.insert(token, conn);
        self.drive_conn(token);
    }

    /// An operation's HTTP answer goes to the connection waiting for it, if it is still there.
    pub(super) fn waiting_conn(&self, op_token: Token) -> Option<Token> {
        self.conns
            .iter()
            .find(|(_, c)| c.phase == Phase::Waiting(op_token))
            .map(|(t, _)| *t)
    }

    pub(super) fn deliver(&mut self, op_token: Token, reply: ops::Reply) {
        let Some(token) = self.waiting_conn(op_token) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&token) {
            let awaiting = c.awaiting.take();
            let keep_alive = awaiting.as_ref().is_some_and(|a| a.keep_alive);
            let close = !keep_alive || self.life.draining.is_some();
            // Operations answer no HEAD request (their routes do not allow it).
            c.respond(&reply.response, false, close);
            if let Some(a) = awaiting {
                a.log.done(reply.response.status);
            }
        }
        self.drive_conn(token);
    }

    pub(super) fn client_gone(&mut self, op_token: Token) {
        if let Some(op) = self.ops.get_mut(&op_token) {
            let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
            let mut env = ops::EnvMut {
                mirror: &mut self.mirror,
                vms: &mut self.vms,
            };
            op.client_gone(op_token, &mut io, &mut env);
        }
        self.drive_op(op_token, None);
    }
}

/// A request that passed `Server::gate`.
pub(super) enum Gate {
    /// OPTIONS: the answer.
    Options(Response),
    /// The route and the name of the token that passed.
    Route(Route, String),
}

pub(super) enum Outcome {
    Respond(Response),
    Error(ApiError),
    Pending(Token),
    Upgraded,
}
