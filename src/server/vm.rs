//! The VM guest agents' part of the loop: their events and timers, their answers handed to
//! the operations that asked, and following the mirror's launchers.

use mio::Token;

use super::Server;
use crate::ops;
use crate::vm::Reply;

impl Server {
    /// An event or timer of the guest agent keyed `key`.
    pub(super) fn on_agent(&mut self, key: Token) {
        let replies = {
            let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
            self.vms.on_agent(key, &mut io)
        };
        self.hand_out(replies);
    }

    /// The mirror may have changed: an agent for each running launcher, none for the others;
    /// restarts waiting for a launcher to stop look again.
    pub(super) fn reconcile_vms(&mut self) {
        let replies = {
            let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
            self.vms.reconcile(&self.mirror, &mut io)
        };
        self.hand_out(replies);
        if self.restarting.is_empty() {
            return;
        }
        let waiting: Vec<Token> = self
            .ops
            .iter()
            .filter(|(_, op)| op.awaits_launcher())
            .map(|(t, _)| *t)
            .collect();
        for op in waiting {
            self.drive_op(op, None);
        }
    }

    fn hand_out(&mut self, replies: Vec<Reply>) {
        for reply in replies {
            let owner = reply.owner;
            let Some(op) = self.ops.get_mut(&owner) else {
                continue;
            };
            self.driving.push(owner);
            let progress = {
                let mut io = ops::Io::new(&mut self.reactor, &self.cfg);
                let mut env = ops::EnvMut {
                    mirror: &mut self.mirror,
                    vms: &mut self.vms,
                };
                op.agent_reply(owner, reply, &mut io, &mut env)
            };
            self.apply_progress(owner, progress);
            self.driving.pop();
        }
    }
}
