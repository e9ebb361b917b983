//! What the `site=` tests share: paths through a site, running code in a namespace, a
//! checked byte pattern for tunnels, a process's peak memory, interactive input.

use std::fs::File;
use std::thread;

use nix::sched::{CloneFlags, setns};
use tungstenite::Message;

use super::*;

pub fn with_site(path: &str, site: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}site={site}")
}

pub fn in_netns<R: Send + 'static>(pid: u32, f: impl FnOnce() -> R + Send + 'static) -> R {
    let ns = File::open(format!("/proc/{pid}/ns/net")).unwrap();
    thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// A position-dependent byte stream and an order-sensitive checksum of it.
pub fn pattern(total: usize, mut out: impl FnMut(&[u8])) {
    let mut chunk = vec![0u8; 65521];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in chunk.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let (mut sent, mut n) = (0usize, 0u64);
    while sent < total {
        let len = chunk.len().min(total - sent);
        chunk[..8].copy_from_slice(&n.to_le_bytes());
        out(&chunk[..len]);
        sent += len;
        n += 1;
    }
}

#[derive(Default)]
pub struct Sum {
    pub h: u64,
    pub len: u64,
}

impl Sum {
    pub fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        for &b in data {
            self.h = (self.h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

pub fn pattern_sum(total: usize) -> (u64, u64) {
    let mut s = Sum::default();
    pattern(total, |c| s.update(c));
    (s.len, s.h)
}

/// A process's peak resident set (VmHWM) in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

pub fn stdin(ws: &mut Ws, bytes: &[u8]) {
    ws.send(Message::binary([&[0x10][..], bytes].concat()))
        .unwrap();
}
