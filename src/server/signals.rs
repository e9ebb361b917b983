//! Signals (SIGHUP reloads the tokens, SIGTERM/SIGINT drain and stop), readiness for
//! systemd, and the graceful shutdown.

use std::time::Instant;

use mio::Token;
use nix::sys::signal::Signal;

use super::conn::Phase;
use super::{Server, TokenState};
use crate::auth::{self, Tokens};
use crate::config::{self, Config};
use crate::ops;
use crate::systemd;

impl Server {
    pub(super) fn on_signal(&mut self) {
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGHUP) => {
                        self.reload_tokens();
                        self.reload_tls();
                        self.reload_sites();
                    }
                    Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => self.begin_shutdown(),
                    _ => {}
                },
                Ok(None) => return,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    log::error!("reading signals: {e}");
                    return;
                }
            }
        }
    }

    pub(super) fn reload_tokens(&mut self) {
        self.tokens = load_tokens(&self.cfg);
        match &self.tokens {
            TokenState::Ready(t) => log::info!("SIGHUP: tokens reloaded ({} entries)", t.len()),
            TokenState::Sealed(why) => log::warn!("SIGHUP: tokens not usable, sealed: {why}"),
        }
    }

    /// The configuration file's `sites:` again. Forwarded requests and sessions in progress
    /// keep the peer they started with; a file that does not check keeps the sites as they
    /// were.
    pub(super) fn reload_sites(&mut self) {
        match config::reload_sites(&self.cfg) {
            Ok(sites) => {
                self.cfg.sites = sites;
                let (peers, errors) = crate::sites::Peers::load(
                    &self.cfg.sites,
                    crate::sites::Resolve::Keep(&self.peers),
                );
                log_peer_errors(errors);
                self.peers = peers;
                log::info!("SIGHUP: sites reloaded ({} peers)", self.peers.len());
                self.start_resolver();
            }
            Err(e) => log::warn!("SIGHUP: sites not reloaded, keeping the old ones: {e}"),
        }
    }

    pub(super) fn begin_shutdown(&mut self) {
        if self.life.draining.is_some() {
            return;
        }
        log::info!("shutting down: no new connections, finishing in-flight work");
        let _ = systemd::notify("STOPPING=1");
        self.life.draining = Some(Instant::now());
        for slot in self.accepting.listeners.iter_mut() {
            if let Some(mut l) = slot.take() {
                let _ = self.reactor.poll.registry().deregister(&mut l);
            }
        }
        // Idle keep-alive connections have nothing in flight: close them now.
        let idle: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Open && !c.has_partial_request() && !c.unsent())
            .map(|(t, _)| *t)
            .collect();
        for t in idle {
            self.close_conn(t);
        }
        let op_tokens: Vec<Token> = self.ops.keys().copied().collect();
        for t in op_tokens {
            if let Some(op) = self.ops.get_mut(&t) {
                let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
                let mut env = ops::EnvMut {
                    mirror: &mut self.mirror,
                    vms: &mut self.vms,
                };
                op.shutdown(t, &mut io, &mut env);
            }
            self.drive_op(t, None);
        }
    }

    pub(super) fn finish_shutdown(&mut self) {
        for (_, mut op) in self.ops.drain() {
            op.abandon();
        }
        let _ = self.docker.client.close_all(self.reactor.poll.registry());
        log::info!("stopped");
    }

    /// READY once the first sync settled (or failed): state requests then have an answer.
    pub(super) fn notify_ready_once(&mut self) {
        if !self.life.notified_ready {
            self.life.notified_ready = true;
            let _ = systemd::notify("READY=1");
        }
    }
}

/// Load the tokens file; first start with the default path creates it.
pub(crate) fn load_tokens(cfg: &Config) -> TokenState {
    if cfg.tokens_is_default && !cfg.tokens.exists() {
        match auth::bootstrap(&cfg.tokens, &cfg.bootstrap_token_file) {
            Ok(Some(path)) => log::warn!(
                "first start: created {} with an admin token; the token is in {}",
                cfg.tokens.display(),
                path.display()
            ),
            Ok(None) => {}
            Err(e) => return TokenState::Sealed(e.to_string()),
        }
    }
    match Tokens::load(&cfg.tokens) {
        Ok(t) => TokenState::Ready(t),
        Err(e) => {
            log::warn!("tokens: {e}; sealed until SIGHUP after it is fixed");
            TokenState::Sealed(e.to_string())
        }
    }
}

/// The peers of `cfg.sites`, those that cannot be used logged (they answer 502 with why).
/// Host names are resolved now: this runs before the loop does.
pub(crate) fn load_peers(cfg: &Config) -> crate::sites::Peers {
    let (peers, errors) = crate::sites::Peers::load(&cfg.sites, crate::sites::Resolve::Now);
    log_peer_errors(errors);
    peers
}

fn log_peer_errors(errors: Vec<crate::sites::LoadError>) {
    for e in errors {
        log::warn!("{e}; requests for that site are answered 502");
    }
}

/// How often the loop looks for the resolver thread's answer.
const RESOLVER_POLL: std::time::Duration = std::time::Duration::from_millis(50);

impl Server {
    /// Resolve the sites' host names off the loop (SIGHUP): on a short-lived thread that
    /// only calls getaddrinfo and sends the answer back; the loop looks for it on a timer.
    /// One resolution at a time; a SIGHUP meanwhile asks for another one after it.
    pub(super) fn start_resolver(&mut self) {
        if self.resolver.is_some() {
            self.resolve_again = true;
            return;
        }
        let hosts = self.peers.hosts();
        if hosts.is_empty() {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("supd-resolve".into())
            .spawn(move || {
                let _ = tx.send(crate::sites::resolve_hosts(hosts));
            });
        match spawned {
            Ok(_) => {
                self.resolver = Some(rx);
                self.reactor
                    .timers
                    .after(RESOLVER_POLL, super::Timer::SitesResolved);
            }
            Err(e) => log::warn!("SIGHUP: cannot resolve the sites' host names: {e}"),
        }
    }

    pub(super) fn on_resolved(&mut self) {
        let Some(rx) = &self.resolver else { return };
        match rx.try_recv() {
            Ok(resolved) => {
                self.peers.apply(&resolved);
                self.resolver = None;
                log::info!("sites: {} host names resolved", resolved.len());
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                self.reactor
                    .timers
                    .after(RESOLVER_POLL, super::Timer::SitesResolved);
                return;
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                log::warn!("sites: the resolver ended without an answer");
                self.resolver = None;
            }
        }
        if std::mem::take(&mut self.resolve_again) {
            self.start_resolver();
        }
    }
}
