//! The in-memory mirror of the managed containers, and the logic that keeps it current.
//!
//! The mirror is sans-IO: it is told what Docker answered and says which requests to make
//! next. Start-up (and every reconnect) is: negotiate the API version, open the event stream,
//! list containers, inspect the managed ones; then every relevant event re-inspects its
//! container. Events that arrive while the full sync runs are remembered and re-inspected
//! after it, so nothing that happened during the sync is lost.

use std::collections::{HashMap, HashSet, VecDeque};

use super::client::Purpose;
use super::events;
use super::inspect::{self, ContainerRecord, SwarmSlot};

/// supd-tracked restart counts per container (Docker's RestartCount resets on a manual start).
/// Defined here, with the mirror that tracks them, and read by `model`, which builds on
/// `docker`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub current_restarts: u32,
    pub total_restarts: u32,
}

/// How many inspects run at once during a full sync.
const SYNC_PARALLEL: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// Make a GET request for this purpose.
    Get { path: String, purpose: Purpose },
    /// Make a POST request (with no body) for this purpose.
    Post { path: String, purpose: Purpose },
    /// The engine's API version is known: use it for every later path.
    ApiVersion(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Not connected (yet, or any more): why.
    Down(String),
    /// Connected, first full sync running.
    Syncing,
    Ready,
}

#[derive(Debug, Default, Clone, Copy)]
struct RestartCounts {
    /// Restarts counted before Docker last reset its own counter.
    base: u32,
    /// Docker's `RestartCount` as last seen.
    last: u32,
    /// Restarts made through supd's API.
    api: u32,
}

#[derive(Default)]
struct Sync {
    queue: VecDeque<String>,
    inflight: HashSet<String>,
    fresh: HashMap<String, ContainerRecord>,
    /// Containers that had events while the sync ran.
    touched: HashSet<String>,
}

pub struct Mirror {
    phase: Phase,
    containers: HashMap<String, ContainerRecord>,
    /// Containers of Swarm tasks that an other task of their slot has replaced: see
    /// [`superseded_tasks`]. Kept in `containers` (an event may make one current again, and
    /// Swarm removes them in its own time), shown nowhere.
    superseded: HashSet<String>,
    /// Per Swarm slot, the creation time of the newest of its current tasks' containers that
    /// went away: what remains of the slot from before is its history, never current again.
    floors: HashMap<SlotKey, CreatedKey>,
    counts: HashMap<String, RestartCounts>,
    sync: Option<Sync>,
    /// Inspects in flight after the sync, and those that must run again when they return.
    inflight: HashSet<String>,
    dirty: HashSet<String>,
    /// True once a sync completed at least once (for logging the first READY).
    ever_ready: bool,
    /// Changes whenever anything a state answer shows may have changed (see `generation`).
    generation: u64,
}

impl Default for Mirror {
    fn default() -> Self {
        Mirror::new()
    }
}

impl Mirror {
    pub fn new() -> Mirror {
        Mirror {
            phase: Phase::Down("connecting to the Docker engine".into()),
            containers: HashMap::new(),
            superseded: HashSet::new(),
            floors: HashMap::new(),
            counts: HashMap::new(),
            sync: None,
            inflight: HashSet::new(),
            dirty: HashSet::new(),
            ever_ready: false,
            generation: 0,
        }
    }

    /// Ok when state can be served; otherwise why not.
    pub fn available(&self) -> Result<(), &str> {
        match &self.phase {
            Phase::Ready => Ok(()),
            Phase::Syncing => Err("synchronizing with the Docker engine"),
            Phase::Down(why) => Err(why),
        }
    }

    /// A number that differs from any earlier one once containers, counters or availability
    /// may have changed: answers computed at the same generation are the same.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn changed(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.containers.len()
    }

    /// The managed containers, without the Swarm tasks that other tasks have replaced.
    pub fn records(&self) -> impl Iterator<Item = &ContainerRecord> {
        self.containers
            .values()
            .filter(|r| !self.superseded.contains(&r.id))
    }

    /// Containers changed: decide again which Swarm task is current in each slot.
    fn reindex(&mut self) {
        let slots: HashSet<SlotKey> = self.containers.values().filter_map(slot_key).collect();
        // A slot none of whose containers is left has no history to hide.
        self.floors.retain(|slot, _| slots.contains(slot));
        self.superseded = superseded_tasks(self.containers.values(), &self.floors);
    }

    /// Container `id` is gone. If it was its Swarm slot's current task, the slot's older
    /// containers are history from now on: Swarm removes a slot's current task's container
    /// when it gives the slot up (scaled down, or the service no longer runs on this node)
    /// and keeps the older ones; when the slot lives on, its next task is newer still.
    fn forget(&mut self, id: &str) {
        if let Some(r) = self.containers.remove(id)
            && !self.superseded.contains(id)
            && let Some(slot) = slot_key(&r)
        {
            let created = created_key(&r);
            let floor = self.floors.entry(slot).or_insert_with(|| created.clone());
            if created > *floor {
                *floor = created;
            }
        }
        self.counts.remove(id);
    }

    #[cfg(test)]
    pub fn get(&self, id: &str) -> Option<&ContainerRecord> {
        self.containers.get(id)
    }

    pub fn counters(&self, id: &str) -> Counters {
        let c = self.counts.get(id).copied().unwrap_or_default();
        Counters {
            current_restarts: c.last,
            total_restarts: c.base.saturating_add(c.last).saturating_add(c.api),
        }
    }

    /// A restart through the API: it counts in the total; Docker resets the current count.
    pub fn note_api_restart(&mut self, id: &str) {
        self.changed();
        let c = self.counts.entry(id.to_string()).or_default();
        c.api = c.api.saturating_add(1);
    }

    /// Begin (or begin again) talking to Docker.
    pub fn connect(&mut self) -> Vec<Want> {
        self.sync = None;
        self.inflight.clear();
        self.dirty.clear();
        vec![Want::Get {
            path: "/version".into(),
            purpose: Purpose::Version,
        }]
    }

    /// Docker went away: stop serving state until the next sync completes.
    pub fn disconnected(&mut self, why: &str) {
        log::warn!("docker: {why}");
        self.changed();
        self.phase = Phase::Down(format!("runtime unavailable: {why}"));
        self.sync = None;
        self.inflight.clear();
        self.dirty.clear();
    }

    /// Whether a failed request means the connection to Docker is lost (as opposed to one
    /// container's inspect failing).
    pub fn is_fatal(purpose: &Purpose) -> bool {
        matches!(purpose, Purpose::Version | Purpose::Events | Purpose::List)
    }

    pub fn on_reply(&mut self, purpose: Purpose, status: u16, body: &[u8]) -> Vec<Want> {
        match purpose {
            Purpose::Version => self.on_version(status, body),
            Purpose::List => self.on_list(status, body),
            Purpose::Inspect(id) => self.on_inspect(id, status, body),
            Purpose::Events | Purpose::Restart { .. } => Vec::new(),
        }
    }

    fn on_version(&mut self, status: u16, body: &[u8]) -> Vec<Want> {
        let version = (status == 200)
            .then(|| serde_json::from_slice::<serde_json::Value>(body).ok())
            .flatten()
            .and_then(|v| v.get("ApiVersion")?.as_str().map(str::to_string))
            .filter(|v| {
                !v.is_empty() && v.len() < 16 && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            });
        let Some(version) = version else {
            self.disconnected(&format!("unexpected answer to /version (status {status})"));
            return Vec::new();
        };
        log::info!("docker: engine API version {version}");
        self.changed();
        self.phase = Phase::Syncing;
        self.sync = Some(Sync::default());
        vec![
            Want::ApiVersion(version),
            Want::Get {
                path: format!("/events?filters={}", events::EVENTS_FILTER),
                purpose: Purpose::Events,
            },
            Want::Get {
                path: "/containers/json?all=1".into(),
                purpose: Purpose::List,
            },
        ]
    }

    fn on_list(&mut self, status: u16, body: &[u8]) -> Vec<Want> {
        let entries = match (status, inspect::list_entry_ids(body)) {
            (200, Ok(entries)) => entries,
            (_, Err(e)) => {
                self.disconnected(&format!("cannot read the container list: {e}"));
                return Vec::new();
            }
            (s, Ok(_)) => {
                self.disconnected(&format!("container list answered {s}"));
                return Vec::new();
            }
        };
        let Some(sync) = self.sync.as_mut() else {
            return Vec::new();
        };
        sync.queue = entries
            .into_iter()
            .filter(|(_, managed)| *managed)
            .map(|(id, _)| id)
            .collect();
        self.pump_sync()
    }

    /// Start queued sync inspects up to the parallel limit; finish the sync when all are done.
    fn pump_sync(&mut self) -> Vec<Want> {
        let Some(sync) = self.sync.as_mut() else {
            return Vec::new();
        };
        let mut wants = Vec::new();
        while sync.inflight.len() < SYNC_PARALLEL {
            let Some(id) = sync.queue.pop_front() else {
                break;
            };
            sync.inflight.insert(id.clone());
            wants.push(inspect_want(&id));
        }
        if sync.inflight.is_empty() && sync.queue.is_empty() {
            self.changed();
            let sync = self.sync.take().unwrap_or_default();
            for (id, rec) in &sync.fresh {
                self.observe_counts(id, rec);
            }
            let gone: Vec<String> = self
                .containers
                .keys()
                .filter(|id| !sync.fresh.contains_key(*id))
                .cloned()
                .collect();
            for id in gone {
                self.forget(&id);
            }
            self.containers = sync.fresh;
            self.reindex();
            self.counts.retain(|id, _| self.containers.contains_key(id));
            self.phase = Phase::Ready;
            if !self.ever_ready {
                log::info!(
                    "docker: mirror ready, {} managed containers",
                    self.containers.len()
                );
            } else {
                log::info!(
                    "docker: resynchronized, {} managed containers",
                    self.containers.len()
                );
            }
            self.ever_ready = true;
            for id in sync.touched {
                wants.extend(self.refresh(id));
            }
        }
        wants
    }

    fn on_inspect(&mut self, id: String, status: u16, body: &[u8]) -> Vec<Want> {
        let parsed = match status {
            200 => match inspect::parse(body) {
                Ok(rec) => rec,
                Err(e) => {
                    log::warn!("docker: cannot read inspect of {}: {e}", short(&id));
                    None
                }
            },
            404 => None,
            s => {
                log::warn!("docker: inspect of {} answered {s}", short(&id));
                None
            }
        };
        if let Some(sync) = self.sync.as_mut() {
            if sync.inflight.remove(&id) {
                if let Some(rec) = parsed {
                    sync.fresh.insert(id, rec);
                }
                return self.pump_sync();
            }
            return Vec::new();
        }
        self.inflight.remove(&id);
        self.changed();
        match parsed {
            Some(rec) => {
                self.observe_counts(&id, &rec);
                self.containers.insert(id.clone(), rec);
            }
            None => self.forget(&id),
        }
        self.reindex();
        if self.dirty.remove(&id) {
            return self.refresh(id);
        }
        Vec::new()
    }

    /// One line of the event stream.
    pub fn on_event(&mut self, line: &[u8]) -> Vec<Want> {
        let ev = match events::parse(line) {
            Ok(Some(ev)) => ev,
            Ok(None) => return Vec::new(),
            Err(e) => {
                log::warn!("docker: unreadable event: {e}");
                return Vec::new();
            }
        };
        // Labels never change, so an event of an unmanaged container cannot matter.
        if !ev.managed || !events::is_relevant(&ev.action) {
            return Vec::new();
        }
        self.on_container_event(ev.id, &ev.action)
    }

    /// A relevant event of a managed container (or one to learn about).
    fn on_container_event(&mut self, id: String, action: &str) -> Vec<Want> {
        if let Some(sync) = self.sync.as_mut() {
            sync.touched.insert(id);
            return Vec::new();
        }
        if action == "destroy" {
            self.changed();
            self.forget(&id);
            self.reindex();
            // An inspect still in flight may answer with the container as it was before
            // the removal: look again when it returns (that one answers 404).
            if self.inflight.contains(&id) {
                self.dirty.insert(id);
            }
            return Vec::new();
        }
        if action == "die"
            && let Some(rec) = self.containers.get_mut(&id)
            && (rec.running || rec.pid != 0)
        {
            // The first process is gone now, and its pid may be reused by a host process
            // before the re-inspect answers: nothing may use it from here on.
            rec.running = false;
            rec.paused = false;
            rec.pid = 0;
            rec.status = "exited".to_owned();
            self.changed();
            self.reindex();
        }
        self.refresh(id)
    }

    /// An event line too long to keep (a container with megabytes of labels): act on what
    /// its start says. A container the mirror manages is re-inspected as for any event; an
    /// unknown one only when it is created or started (its labels decide then whether it is
    /// managed), so a large unmanaged container's frequent events cost nothing.
    pub fn on_cut_event(&mut self, prefix: &[u8]) -> Vec<Want> {
        let Some((id, action)) = events::parse_cut(prefix) else {
            log::warn!("docker: an event too long to read, with no container id in its start");
            return Vec::new();
        };
        let known = self.containers.contains_key(&id) || self.inflight.contains(&id);
        let verb = action.split(':').next().unwrap_or(&action);
        if !events::is_relevant(&action) || !(known || matches!(verb, "create" | "start")) {
            return Vec::new();
        }
        self.on_container_event(id, &action)
    }

    /// Re-inspect one container, coalescing with an inspect already in flight.
    fn refresh(&mut self, id: String) -> Vec<Want> {
        if self.inflight.contains(&id) {
            self.dirty.insert(id);
            return Vec::new();
        }
        self.inflight.insert(id.clone());
        vec![inspect_want(&id)]
    }

    fn observe_counts(&mut self, id: &str, rec: &ContainerRecord) {
        let c = self.counts.entry(id.to_string()).or_default();
        if rec.restart_count < c.last {
            // Docker resets its counter on a manual start or restart; keep the total going.
            c.base = c.base.saturating_add(c.last);
        }
        c.last = rec.restart_count;
    }
}

/// The containers of Swarm tasks that are not their slot's current task. Swarm keeps the
/// containers of a slot's earlier tasks, stopped (its task history, 5 per slot by default),
/// and the local engine does not say which task Swarm means to run: only the containers.
/// The current one is the live one (running, paused or restarting), else the newest by
/// creation, ties broken by id. Live first: when Swarm starts a replacement before it stops
/// the old task (`update_config.order: start-first`), the task that runs stays the instance
/// until the new one runs too; otherwise the newest, because Swarm creates a slot's next task
/// only once the previous one has stopped, so a newer container is always the later task (a
/// replacement created but not yet started, or one that failed).
///
/// `floors` hides a slot's containers created no later than its floor, whatever they are:
/// see [`Mirror::forget`].
fn superseded_tasks<'r>(
    records: impl Iterator<Item = &'r ContainerRecord> + Clone,
    floors: &HashMap<SlotKey, CreatedKey>,
) -> HashSet<String> {
    let rank = |r: &'r ContainerRecord| {
        (
            r.running || r.paused || r.restarting,
            inspect::created_order(&r.created),
            r.id.as_str(),
        )
    };
    let below_floor = |r: &ContainerRecord| {
        slot_key(r)
            .and_then(|slot| floors.get(&slot))
            .is_some_and(|floor| created_key(r) <= *floor)
    };
    let mut current: HashMap<(&str, &SwarmSlot), &ContainerRecord> = HashMap::new();
    for r in records.clone() {
        let Some(task) = &r.swarm else {
            continue;
        };
        if below_floor(r) {
            continue;
        }
        let slot = current.entry((&task.service_id, &task.slot)).or_insert(r);
        if rank(r) > rank(slot) {
            *slot = r;
        }
    }
    records
        .filter(|r| {
            r.swarm.as_ref().is_some_and(|t| {
                below_floor(r)
                    || current
                        .get(&(t.service_id.as_str(), &t.slot))
                        .is_some_and(|c| c.id != r.id)
            })
        })
        .map(|r| r.id.clone())
        .collect()
}

/// A Swarm slot: its service's id and the slot.
type SlotKey = (String, SwarmSlot);
/// A container's creation time, in order (see [`inspect::created_order`]).
type CreatedKey = (String, u32);

fn slot_key(r: &ContainerRecord) -> Option<SlotKey> {
    r.swarm
        .as_ref()
        .map(|t| (t.service_id.clone(), t.slot.clone()))
}

fn created_key(r: &ContainerRecord) -> CreatedKey {
    let (secs, nanos) = inspect::created_order(&r.created);
    (secs.to_string(), nanos)
}

fn inspect_want(id: &str) -> Want {
    Want::Get {
        path: format!("/containers/{id}/json"),
        purpose: Purpose::Inspect(id.to_string()),
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: &[u8] = include_bytes!("../../tests/fixtures/docker/main.json");
    const MAIN_ID: &str = "1a3ea50401cf05f9532a5121b35d2d8597b558e5c6e9862be0af9a439a39dd7a";
    const TASK: &[u8] = include_bytes!("../../tests/fixtures/docker/swarm-task.json");
    const TASK_ID: &str = "7215780206d6c44d4c1e66d1e2a9e6b7312fdff4b92af26df11070721caa696d";

    /// The captured task's container with another id and creation time, running or exited.
    fn task_doc(c: char, created: &str, running: bool) -> (String, Vec<u8>) {
        let id = c.to_string().repeat(64);
        let mut v: serde_json::Value = serde_json::from_slice(TASK).unwrap();
        v["Id"] = id.clone().into();
        v["Created"] = created.into();
        v["State"]["Running"] = running.into();
        v["State"]["Status"] = if running { "running" } else { "exited" }.into();
        if !running {
            v["State"]["Pid"] = 0.into();
        }
        (id, serde_json::to_vec(&v).unwrap())
    }

    fn shown(m: &Mirror) -> Vec<String> {
        let mut v: Vec<String> = m.records().map(|r| r.id[..1].to_string()).collect();
        v.sort();
        v
    }

    /// Only the current task of a Swarm slot is shown: the running one, else the newest; the
    /// others stay in the mirror (an event can make one current again).
    #[test]
    fn only_the_current_task_of_a_slot_is_shown() {
        let mut m = synced();
        let feed = |m: &mut Mirror, (id, doc): (String, Vec<u8>)| {
            m.refresh(id.clone());
            m.on_reply(Purpose::Inspect(id), 200, &doc);
        };
        // An old task, stopped; its replacement created later and running.
        feed(&mut m, task_doc('a', "2026-12-02T07:32:08.8Z", false));
        assert_eq!(
            shown(&m),
            ["1", "a"],
            "a slot's only task is shown, stopped"
        );
        feed(&mut m, task_doc('b', "2026-12-02T07:32:22.46Z", true));
        assert_eq!(shown(&m), ["1", "b"]);
        assert_eq!(m.len(), 3, "the old task is kept");
        // The replacement dies too: the newest is still the one shown (failed).
        feed(&mut m, task_doc('b', "2026-12-02T07:32:22.46Z", false));
        assert_eq!(shown(&m), ["1", "b"]);
        // A newer task only created (not started): the newest.
        feed(&mut m, task_doc('c', "2026-12-02T07:32:22.5Z", false));
        assert_eq!(shown(&m), ["1", "c"]);
        // start-first: the old one runs again while the new one is only created; then both run.
        feed(&mut m, task_doc('b', "2026-12-02T07:32:22.46Z", true));
        assert_eq!(shown(&m), ["1", "b"], "the running task, though older");
        feed(&mut m, task_doc('c', "2026-12-02T07:32:22.5Z", true));
        assert_eq!(shown(&m), ["1", "c"], "both running: the newest");
        // The current task's container removed (Swarm gave the slot up, or someone removed
        // it): what is left of the slot is history, shown no more.
        m.on_container_event("c".repeat(64), "destroy");
        assert_eq!(shown(&m), ["1"]);
        assert_eq!(m.len(), 3, "a and b are kept");
        // Not even when it runs again.
        feed(&mut m, task_doc('b', "2026-12-02T07:32:22.46Z", true));
        assert_eq!(shown(&m), ["1"]);
        // A newer task in the slot (Swarm replaced the removed one): that is the instance.
        feed(&mut m, task_doc('d', "2026-12-02T07:32:23Z", false));
        assert_eq!(shown(&m), ["1", "d"]);
        // An old task's container removed (Swarm's task history limit) changes nothing.
        m.on_container_event("a".repeat(64), "destroy");
        assert_eq!(shown(&m), ["1", "d"]);
        // Once no container of the slot is left, the slot is forgotten: a task with an older
        // creation time (a clock set back) is its instance again.
        for c in ['b', 'd'] {
            m.on_container_event(c.to_string().repeat(64), "destroy");
        }
        assert_eq!(shown(&m), ["1"]);
        assert!(m.floors.is_empty());
        feed(&mut m, (TASK_ID.into(), TASK.to_vec()));
        assert_eq!(shown(&m), ["1", "7"]);
        // A `die` event hides nothing before the re-inspect: it is still the slot's task.
        m.on_container_event(TASK_ID.into(), "die");
        assert_eq!(shown(&m), ["1", "7"]);
    }

    /// The same when the removal is learnt from an inspect answering 404, or from a resync
    /// (the engine was away while Swarm removed the container).
    #[test]
    fn a_current_task_gone_while_away_leaves_history_only() {
        for resync in [false, true] {
            let mut m = synced();
            let (old, old_doc) = task_doc('a', "2026-12-02T07:32:08.8Z", false);
            let (new, new_doc) = task_doc('b', "2026-12-02T07:32:22.46Z", true);
            for (id, doc) in [(&old, &old_doc), (&new, &new_doc)] {
                m.refresh(id.clone());
                m.on_reply(Purpose::Inspect(id.clone()), 200, doc);
            }
            assert_eq!(shown(&m), ["1", "b"]);
            if resync {
                m.disconnected("engine restarted");
                m.connect();
                m.on_reply(Purpose::Version, 200, br#"{"ApiVersion":"1.41"}"#);
                let list = format!(
                    r#"[{{"Id":"{MAIN_ID}","Labels":{{"io.supd.application":"shop","io.supd.service":"web","io.supd.instance":"1"}}}},{{"Id":"{old}","Labels":{{"io.supd.application":"shop","io.supd.service":"web","io.supd.instance":"2"}}}}]"#
                );
                m.on_reply(Purpose::List, 200, list.as_bytes());
                m.on_reply(Purpose::Inspect(MAIN_ID.into()), 200, MAIN);
                m.on_reply(Purpose::Inspect(old.clone()), 200, &old_doc);
                assert!(m.is_ready());
            } else {
                m.refresh(new.clone());
                m.on_reply(Purpose::Inspect(new.clone()), 404, b"");
            }
            assert_eq!(shown(&m), ["1"], "resync: {resync}");
        }
    }

    /// Slots are told apart by service id and slot: another slot, another service with the
    /// same name, a global service's node: each has its own current task.
    #[test]
    fn slots_are_per_service_id_and_slot() {
        let base: serde_json::Value = serde_json::from_slice(TASK).unwrap();
        let mut records = Vec::new();
        for (c, service_id, name) in [
            (
                'a',
                "a7bky3lwt1lfnk7teg8nh8rv9",
                "shopx_web.2.mlg5be3pqdlv8f5fvqdj1fuzq",
            ),
            (
                'b',
                "a7bky3lwt1lfnk7teg8nh8rv9",
                "shopx_web.3.mlg5be3pqdlv8f5fvqdj1fuzq",
            ),
            (
                'c',
                "zzbky3lwt1lfnk7teg8nh8rv9",
                "shopx_web.2.mlg5be3pqdlv8f5fvqdj1fuzq",
            ),
            (
                'd',
                "a7bky3lwt1lfnk7teg8nh8rv9",
                "shopx_web.2.mlg5be3pqdlv8f5fvqdj1fuzq",
            ),
        ] {
            let mut v = base.clone();
            v["Id"] = c.to_string().repeat(64).into();
            let labels = &mut v["Config"]["Labels"];
            labels["com.docker.swarm.service.id"] = service_id.into();
            labels["com.docker.swarm.task.name"] = name.into();
            records.push(
                inspect::parse(&serde_json::to_vec(&v).unwrap())
                    .unwrap()
                    .unwrap(),
            );
        }
        // a and d: same slot, same creation time and both running: the id decides.
        let hidden = superseded_tasks(records.iter(), &HashMap::new());
        assert_eq!(hidden, HashSet::from(["a".repeat(64)]));
        // Plain containers are never superseded.
        let plain = inspect::parse(MAIN).unwrap().unwrap();
        assert!(superseded_tasks([plain].iter(), &HashMap::new()).is_empty());
    }

    fn synced() -> Mirror {
        let mut m = Mirror::new();
        m.connect();
        m.on_reply(Purpose::Version, 200, br#"{"ApiVersion":"1.41"}"#);
        let list = format!(
            r#"[{{"Id":"{MAIN_ID}","Labels":{{"io.supd.application":"shop","io.supd.service":"web","io.supd.instance":"1"}}}}]"#
        );
        let wants = m.on_reply(Purpose::List, 200, list.as_bytes());
        assert_eq!(wants, vec![inspect_want(MAIN_ID)]);
        m.on_reply(Purpose::Inspect(MAIN_ID.into()), 200, MAIN);
        assert!(m.is_ready());
        m
    }

    #[test]
    fn generation_moves_with_every_visible_change() {
        let mut m = synced();
        assert_eq!(m.len(), 1);
        let g = m.generation();

        // Nothing visible changes: the same generation (answers may be reused).
        assert!(m.on_event(b"not json").is_empty());
        assert_eq!(m.generation(), g);

        m.note_api_restart(MAIN_ID);
        let g2 = m.generation();
        assert_ne!(g2, g, "counters changed");

        m.on_reply(Purpose::Inspect(MAIN_ID.into()), 404, b"");
        assert_eq!(m.len(), 0);
        let g3 = m.generation();
        assert_ne!(g3, g2, "a container went away");

        m.disconnected("engine gone");
        assert!(m.available().is_err());
        assert_ne!(m.generation(), g3, "availability changed");
    }

    #[test]
    fn die_stops_the_record_before_the_reinspect() {
        let mut m = synced();
        let rec = m.get(MAIN_ID).unwrap();
        assert!(rec.running && rec.pid > 0);
        let g = m.generation();
        let die = format!(
            r#"{{"Type":"container","Action":"die","id":"{MAIN_ID}","Actor":{{"ID":"{MAIN_ID}","Attributes":{{"io.supd.application":"shop","io.supd.service":"web","io.supd.instance":"1","exitCode":"137"}}}},"timeNano":1}}"#
        );
        let wants = m.on_event(die.as_bytes());
        assert_eq!(wants, vec![inspect_want(MAIN_ID)]);
        let rec = m.get(MAIN_ID).unwrap();
        assert!(!rec.running, "running until the re-inspect answers");
        assert_eq!(rec.pid, 0);
        assert_ne!(m.generation(), g);
    }

    #[test]
    fn a_finished_sync_is_a_new_generation() {
        let m = synced();
        let mut again = Mirror::new();
        assert_eq!(again.generation(), 0);
        again.connect();
        again.on_reply(Purpose::Version, 200, br#"{"ApiVersion":"1.41"}"#);
        let g = again.generation();
        again.on_reply(Purpose::List, 200, b"[]");
        assert!(again.is_ready());
        assert_ne!(again.generation(), g);
        assert!(m.generation() > 0);
    }

    /// A destroy that overtakes an inspect in flight: the inspect's answer describes the
    /// container as it was, so it is looked at again (and answers 404), never kept. The same
    /// through a cut event line (a container with megabytes of labels).
    #[test]
    fn a_destroy_during_an_inspect_is_not_undone_by_its_answer() {
        for cut in [false, true] {
            let mut m = synced();
            let start = format!(
                r#"{{"status":"start","id":"{MAIN_ID}","Type":"container","Action":"start","Actor":{{"ID":"{MAIN_ID}","Attributes":{{"io.supd.application":"shop","io.supd.service":"web","io.supd.instance":"1"}}}},"timeNano":1}}"#
            );
            let destroy = start.replace("start", "destroy");
            let feed = |m: &mut Mirror, line: &str| {
                if cut {
                    m.on_cut_event(&line.as_bytes()[..line.len() / 2])
                } else {
                    m.on_event(line.as_bytes())
                }
            };
            assert_eq!(feed(&mut m, &start), vec![inspect_want(MAIN_ID)]);
            assert!(feed(&mut m, &destroy).is_empty());
            assert!(m.get(MAIN_ID).is_none());
            // The stale answer (the container still there) comes back: asked again.
            let again = m.on_reply(Purpose::Inspect(MAIN_ID.into()), 200, MAIN);
            assert_eq!(again, vec![inspect_want(MAIN_ID)], "cut: {cut}");
            m.on_reply(Purpose::Inspect(MAIN_ID.into()), 404, b"");
            assert!(m.get(MAIN_ID).is_none(), "cut: {cut}");
        }
    }
}
