//! VM containers: a service instance's virtual machine runs in a Docker container (its
//! launcher, which runs QEMU); supd reaches the guest through unix sockets QEMU serves inside
//! the launcher: the guest agent ([`agent`], [`qga`]), the serial console and spare serial
//! ports used as terminals. README "VM containers" has the contract.
//!
//! [`Vms`] holds what outlives one request: each running launcher's agent connection, which
//! terminal ports are taken, who has the console.

pub mod agent;
pub mod qga;

use std::collections::HashMap;

use mio::Token;

use crate::docker::inspect::ContainerRecord;
use crate::docker::mirror::Mirror;
use crate::model::Guests;
use crate::reactor::Io;

pub use agent::{Agent, Error as AgentError, Got, Reply, Request};

/// Whether this supd keeps an agent for launcher `rec`: always, except in a debug build run
/// with `SUPD_DEBUG_VM_APPS`, where only launchers whose application contains that text do.
/// A guest agent serves one client, and every supd keeps a connection to every running
/// launcher's agent: tests that share a Docker engine would take each other's VMs
/// (tests/common gives each test process's supd its own `-<pid>-`, which `unique` puts in
/// every application name).
fn ours(rec: &ContainerRecord) -> bool {
    #[cfg(debug_assertions)]
    {
        static ONLY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        if let Some(only) = ONLY.get_or_init(|| std::env::var("SUPD_DEBUG_VM_APPS").ok()) {
            return rec.identity.application.contains(only.as_str());
        }
    }
    let _ = rec;
    true
}

/// The launchers whose agents supd keeps a connection to: each instance's VM (the launcher
/// the state shows, `model::vm_launcher`), when it runs. Other launchers of an instance are
/// reached by nothing, their agents included.
fn watched<'r>(records: impl Iterator<Item = &'r ContainerRecord>) -> Vec<&'r ContainerRecord> {
    let mut launchers: HashMap<(&str, &str, u32), Vec<&ContainerRecord>> = HashMap::new();
    for r in records.filter(|r| r.is_vm()) {
        let i = &r.identity;
        launchers
            .entry((&i.application, &i.service, i.instance))
            .or_default()
            .push(r);
    }
    launchers
        .into_values()
        .filter_map(crate::model::vm_launcher)
        .filter(|r| r.running && r.pid > 0)
        .collect()
}

/// One running launcher.
pub struct Vm {
    pub agent: Agent,
    /// The launcher's first process when this entry was made: another one means a restart.
    pub pid: i32,
    /// Which operation holds each terminal port (the index in the launcher's `terminals`).
    pub terminals: Vec<Option<Token>>,
    /// The console session, if one is open.
    pub console: Option<Token>,
}

/// The VMs of the running launchers, by the launcher's full container id.
#[derive(Default)]
pub struct Vms {
    by_id: HashMap<String, Vm>,
    /// Agent key → launcher id.
    keys: HashMap<Token, String>,
    /// Counts changes of what the state shows (added to the mirror's generation).
    removed: u64,
}

impl Vms {
    /// Follow the mirror: an entry for each running launcher (its agent watched, so the state
    /// can say whether it answers), none for the others. Answers for requests of launchers
    /// that stopped are returned.
    pub fn reconcile(&mut self, mirror: &Mirror, io: &mut Io<'_>) -> Vec<Reply> {
        let mut replies = Vec::new();
        let running: HashMap<&str, &ContainerRecord> = watched(mirror.records())
            .into_iter()
            .filter(|r| ours(r))
            .map(|r| (r.id.as_str(), r))
            .collect();
        let stale: Vec<String> = self
            .by_id
            .iter()
            .filter(|(id, vm)| running.get(id.as_str()).is_none_or(|r| r.pid != vm.pid))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(mut vm) = self.by_id.remove(&id) {
                self.keys.retain(|_, v| *v != id);
                replies.extend(vm.agent.close(io));
                self.removed += 1 + vm.agent.changes;
            }
        }
        for (id, rec) in running {
            if self.by_id.contains_key(id) {
                continue;
            }
            let Some(spec) = &rec.vm else { continue };
            let key = io.token();
            let mut agent = Agent::new(key, rec.pid, id, &spec.agent, io.cfg.exec.output_cap);
            agent.watch(io);
            self.keys.insert(key, id.to_string());
            self.by_id.insert(
                id.to_string(),
                Vm {
                    agent,
                    pid: rec.pid,
                    terminals: vec![None; spec.terminals.len()],
                    console: None,
                },
            );
            self.removed += 1;
        }
        replies
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Vm> {
        self.by_id.get_mut(id)
    }

    /// Queue `cmd` for the agent of launcher `id`, from operation `owner` (its answer comes
    /// back tagged `tag`), with `timeout` to be answered once sent.
    pub fn submit(
        &mut self,
        id: &str,
        owner: Token,
        tag: u64,
        cmd: agent::Command,
        timeout: std::time::Duration,
        io: &mut Io<'_>,
    ) -> Result<(), AgentError> {
        let vm = self.by_id.get_mut(id).ok_or(AgentError::Gone)?;
        vm.agent.submit(
            Request {
                owner,
                tag,
                cmd,
                timeout,
            },
            io,
        )
    }

    /// An event or timer of the agent keyed `key`: its answers.
    pub fn on_agent(&mut self, key: Token, io: &mut Io<'_>) -> Vec<Reply> {
        let Some(id) = self.keys.get(&key) else {
            return Vec::new();
        };
        match self.by_id.get_mut(id) {
            Some(vm) => vm.agent.on_event(io),
            None => Vec::new(),
        }
    }

    /// Everything an operation holds (terminal ports, the console, queued commands) is let go.
    pub fn release(&mut self, owner: Token) {
        for vm in self.by_id.values_mut() {
            for t in &mut vm.terminals {
                if *t == Some(owner) {
                    *t = None;
                }
            }
            if vm.console == Some(owner) {
                vm.console = None;
            }
            vm.agent.forget(owner);
        }
    }

    /// What the state shows of each VM's guest.
    pub fn guests(&self) -> Guests {
        self.by_id
            .iter()
            .map(|(id, vm)| (id.clone(), vm.agent.info.clone()))
            .collect()
    }

    /// Changes whenever [`Vms::guests`] may have changed.
    pub fn generation(&self) -> u64 {
        self.removed + self.by_id.values().map(|vm| vm.agent.changes).sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::inspect;

    fn launcher(instance: u32, container: &str, c: char, running: bool) -> ContainerRecord {
        let json: &[u8] = include_bytes!("../../tests/fixtures/docker/plain.json");
        let mut r = inspect::parse(json).unwrap().unwrap();
        r.identity.instance = instance;
        r.identity.container = container.into();
        r.id = c.to_string().repeat(64);
        r.running = running;
        r.pid = if running { 100 } else { 0 };
        r.vm = Some(inspect::VmSpec {
            agent: inspect::DEFAULT_VM_AGENT.into(),
            console: inspect::DEFAULT_VM_CONSOLE.into(),
            terminals: Vec::new(),
            address: None,
        });
        r
    }

    #[test]
    fn only_each_instances_vm_is_watched_and_only_while_it_runs() {
        let records = [
            launcher(1, "b", 'b', true),
            // The instance's VM (first by name): the other launcher is reached by nothing.
            launcher(1, "a", 'a', true),
            // Another instance's VM, stopped.
            launcher(2, "a", 'c', false),
            launcher(3, "z", 'd', true),
        ];
        let mut ids: Vec<char> = watched(records.iter())
            .iter()
            .map(|r| r.id.chars().next().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, ['a', 'd']);
    }
}
