//! Which connections get in while nobody has shown a token yet.
//!
//! A connection is unauthenticated from its accept until one of its requests passes auth.
//! Such connections cost nothing to open, so they get less than authenticated ones: a share of
//! the connection slots (the rest is reserved for authenticated traffic), a cap per peer
//! address, and a short life (`Limits::preauth_timeout`, enforced by the server's timers).
//! When their share is full, the oldest of them makes room for a new one: a client that sends
//! its request at once is authenticated long before a flood can push it out, while a silent
//! connection is what gets dropped. At a peer's cap, likewise, that peer's oldest
//! unauthenticated connection makes room (a client behind a proxy shares its address with
//! whoever floods it, and a newcomer may carry a valid token).
//!
//! Authenticated connections are counted per token (with the websocket sessions a token
//! holds): past `Limits::connections_per_token` a request is refused. When every slot is
//! taken, the connection idle the longest is closed to admit a new one (`Verdict::Full`).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use mio::Token;

use crate::config::Limits;

/// What to do with a newly accepted connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Admit,
    /// Admit it after closing this older unauthenticated connection, which is told why.
    Evict(Token, ConnError),
    /// Every slot is taken by authenticated connections and operations: admit it only if an
    /// idle one can be closed.
    Full,
}

/// Why a connection is refused, timed out or closed to make room; the statuses are in
/// `http::error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnError {
    /// A request's head (or an authenticated request) did not arrive in time.
    Timeout,
    /// Every connection slot is taken.
    TooMany,
    /// Refused for this reason (a cap of its peer or its token).
    Refused(&'static str),
}

pub(crate) const PEER_CAP: &str = "too many unauthenticated connections from this address";
pub(crate) const TOKEN_CAP: &str = "too many connections and sessions for this token";

#[derive(Debug, Default)]
pub(crate) struct Admission {
    /// Unauthenticated connections, oldest first (tokens only grow), with their peer.
    pending: BTreeMap<Token, Option<IpAddr>>,
    per_peer: HashMap<IpAddr, usize>,
    /// What each token name holds: connections and websocket operations, by their mio token.
    holder: HashMap<Token, String>,
    per_holder: HashMap<String, usize>,
    /// Forwards to a site with a shared token, by their operation: (token name, site).
    site_holder: HashMap<Token, (String, String)>,
    per_site: HashMap<(String, String), usize>,
}

impl Admission {
    /// The most unauthenticated connections at once: the slots minus the reserve, which is at
    /// most half of them.
    pub(crate) fn share(limits: &Limits) -> usize {
        let reserve = limits.reserved_connections.min(limits.max_connections / 2);
        (limits.max_connections - reserve).max(1)
    }

    /// Decide on a new connection from `peer` while `open` slots are taken (connections and
    /// operations). Unix-socket peers (None) are local processes and exempt from the per-peer
    /// cap, not from the share.
    pub(crate) fn admit(&self, peer: Option<IpAddr>, open: usize, limits: &Limits) -> Verdict {
        if let Some(ip) = peer
            && self.per_peer.get(&ip).copied().unwrap_or(0) >= limits.preauth_per_peer
            && let Some((&oldest, _)) = self.pending.iter().find(|(_, p)| **p == Some(ip))
        {
            return Verdict::Evict(oldest, ConnError::Refused(PEER_CAP));
        }
        if open < limits.max_connections && self.pending.len() < Admission::share(limits) {
            return Verdict::Admit;
        }
        match self.pending.keys().next() {
            Some(&oldest) => Verdict::Evict(oldest, ConnError::TooMany),
            None => Verdict::Full,
        }
    }

    /// A request on connection `conn` passed auth as token `name`: the connection now counts
    /// for that token, unless the token already holds its cap.
    pub(crate) fn claim(
        &mut self,
        conn: Token,
        name: &str,
        limits: &Limits,
    ) -> Result<(), ConnError> {
        if self.holder.get(&conn).is_some_and(|n| n == name) {
            return Ok(());
        }
        if self.per_holder.get(name).copied().unwrap_or(0) >= limits.connections_per_token {
            return Err(ConnError::Refused(TOKEN_CAP));
        }
        self.release(conn);
        self.holder.insert(conn, name.to_string());
        *self.per_holder.entry(name.to_string()).or_insert(0) += 1;
        Ok(())
    }

    /// A connection upgraded into operation `op`: its claim moves with it.
    pub(crate) fn transfer(&mut self, conn: Token, op: Token) {
        if let Some(name) = self.holder.remove(&conn) {
            self.holder.insert(op, name);
        }
    }

    /// Forward operation `op` of token `name` to `site` (one whose token all clients share at
    /// the peer): at most `cap` at once per token and site. False: at the cap.
    pub(crate) fn claim_site(&mut self, op: Token, name: &str, site: &str, cap: usize) -> bool {
        let key = (name.to_string(), site.to_string());
        let n = self.per_site.entry(key.clone()).or_insert(0);
        if *n >= cap {
            if *n == 0 {
                self.per_site.remove(&key);
            }
            return false;
        }
        *n += 1;
        self.site_holder.insert(op, key);
        true
    }

    /// A connection or operation is gone: its token holds one less.
    pub(crate) fn release(&mut self, t: Token) {
        if let Some(key) = self.site_holder.remove(&t)
            && let Some(n) = self.per_site.get_mut(&key)
        {
            *n -= 1;
            if *n == 0 {
                self.per_site.remove(&key);
            }
        }
        let Some(name) = self.holder.remove(&t) else {
            return;
        };
        if let Some(n) = self.per_holder.get_mut(&name) {
            *n -= 1;
            if *n == 0 {
                self.per_holder.remove(&name);
            }
        }
    }

    pub(crate) fn add(&mut self, token: Token, peer: Option<IpAddr>) {
        self.pending.insert(token, peer);
        if let Some(ip) = peer {
            *self.per_peer.entry(ip).or_insert(0) += 1;
        }
    }

    /// The connection is gone, or passed auth: it no longer counts as unauthenticated.
    pub(crate) fn remove(&mut self, token: Token) {
        let Some(Some(ip)) = self.pending.remove(&token) else {
            return;
        };
        if let Some(n) = self.per_peer.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, reserve: usize, per_peer: usize) -> Limits {
        Limits {
            max_connections: max,
            reserved_connections: reserve,
            preauth_per_peer: per_peer,
            ..Limits::default()
        }
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn the_oldest_unauthenticated_connection_makes_room() {
        let l = limits(4, 2, 10);
        let mut a = Admission::default();
        a.add(Token(1), ip(1));
        a.add(Token(2), ip(2));
        // The share (2) is full: a new one evicts the oldest, even with slots free.
        assert_eq!(
            a.admit(ip(3), 2, &l),
            Verdict::Evict(Token(1), ConnError::TooMany)
        );
        a.remove(Token(1));
        a.add(Token(3), ip(3));
        // Token 2 authenticates: it leaves the share, a newcomer gets in.
        a.remove(Token(2));
        assert_eq!(a.admit(ip(4), 2, &l), Verdict::Admit);
    }

    #[test]
    fn all_slots_authenticated_is_full() {
        let l = limits(4, 2, 10);
        let a = Admission::default();
        assert_eq!(a.admit(ip(1), 4, &l), Verdict::Full);
    }

    #[test]
    fn per_peer_cap_counts_unauthenticated_connections_of_one_address() {
        let l = limits(100, 10, 2);
        let mut a = Admission::default();
        a.add(Token(1), ip(1));
        a.add(Token(2), ip(1));
        // At the cap the peer's own oldest makes room, not another peer's.
        a.add(Token(9), ip(2));
        assert_eq!(
            a.admit(ip(1), 3, &l),
            Verdict::Evict(Token(1), ConnError::Refused(PEER_CAP))
        );
        a.remove(Token(9));
        assert_eq!(a.admit(ip(2), 2, &l), Verdict::Admit);
        // Unix-socket peers are not capped per peer.
        a.add(Token(3), None);
        a.add(Token(4), None);
        assert_eq!(a.admit(None, 4, &l), Verdict::Admit);
        a.remove(Token(1));
        assert_eq!(a.admit(ip(1), 3, &l), Verdict::Admit);
        assert_eq!(a.pending.len(), 3);
    }

    #[test]
    fn a_token_holds_at_most_its_cap() {
        let l = Limits {
            connections_per_token: 2,
            ..Limits::default()
        };
        let mut a = Admission::default();
        assert_eq!(a.claim(Token(1), "reader", &l), Ok(()));
        assert_eq!(a.claim(Token(1), "reader", &l), Ok(()));
        assert_eq!(a.claim(Token(2), "reader", &l), Ok(()));
        assert_eq!(
            a.claim(Token(3), "reader", &l),
            Err(ConnError::Refused(TOKEN_CAP))
        );
        assert_eq!(a.claim(Token(3), "admin", &l), Ok(()));
        // An upgraded connection's session still counts; its end frees the place.
        a.transfer(Token(2), Token(20));
        assert!(a.claim(Token(4), "reader", &l).is_err());
        a.release(Token(20));
        assert_eq!(a.claim(Token(4), "reader", &l), Ok(()));
    }

    #[test]
    fn the_reserve_is_at_most_half() {
        assert_eq!(Admission::share(&limits(5, 128, 1)), 3);
        assert_eq!(Admission::share(&limits(1024, 128, 1)), 896);
        assert_eq!(Admission::share(&limits(1, 128, 1)), 1);
    }
}
