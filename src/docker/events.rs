//! One line of Docker's `/events` stream (newline-delimited JSON), reduced to what the mirror
//! needs to decide whether to re-inspect or forget a container.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

use super::{inspect, nullable};

/// Longest event line accepted. An event carries the container's labels as attributes, so it is
/// as large as its label set; a few KiB in practice.
pub const MAX_EVENT_LEN: usize = 1 << 20;

/// `{"type":["container"]}`, percent-encoded for the query string.
pub const EVENTS_FILTER: &str = "%7B%22type%22%3A%5B%22container%22%5D%7D";

#[derive(Debug)]
pub enum Error {
    TooLarge {
        len: usize,
    },
    Json(serde_json::Error),
    /// A container event without the container's id.
    MissingId,
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TooLarge { len } => {
                write!(f, "event line of {len} bytes exceeds {MAX_EVENT_LEN} bytes")
            }
            Error::Json(e) => write!(f, "malformed event: {e}"),
            Error::MissingId => f.write_str("container event without a container id"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Json(e) => Some(e),
            Error::TooLarge { .. } | Error::MissingId => None,
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Json(e)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// Full container id.
    pub id: String,
    /// Docker's raw `Action`: "start", "die", "health_status: healthy", "exec_create: sh", ...
    pub action: String,
    /// 0 when Docker did not say.
    pub time_nano: i64,
    /// Whether the container's labels, which Docker copies into the event, make it managed.
    /// Labels cannot change after creation, so an unmanaged container can be ignored without
    /// inspecting it.
    pub managed: bool,
}

/// `None` for events about anything but containers (networks, images, volumes, ...), and for
/// blank lines.
/// What can be read from the start of an event line too long to keep (see
/// `wire::Line::Cut`): the container id and the action, which Docker writes before the
/// actor's attributes (the labels that made the line long). Its labels are lost, so whether
/// the container is managed is for the mirror to know or to learn by inspecting it.
pub fn parse_cut(prefix: &[u8]) -> Option<(String, String)> {
    let id = string_field(prefix, b"\"id\":\"")
        .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))?;
    let action = string_field(prefix, b"\"Action\":\"")
        .or_else(|| string_field(prefix, b"\"status\":\""))?;
    Some((id, action))
}

/// The value of the first `"name":"value"` in `text` (no escapes: ids and actions have none).
fn string_field(text: &[u8], key: &[u8]) -> Option<String> {
    let at = text.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &text[at..];
    let len = rest.iter().position(|&b| b == b'"')?;
    let value = &rest[..len.min(128)];
    (len <= 128
        && value
            .iter()
            .all(|&b| (b.is_ascii_graphic() || b == b' ') && b != b'\\'))
    .then(|| String::from_utf8_lossy(value).into_owned())
}

pub fn parse(line: &[u8]) -> Result<Option<ContainerEvent>> {
    if line.len() > MAX_EVENT_LEN {
        return Err(Error::TooLarge { len: line.len() });
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let raw: RawEvent = serde_json::from_slice(line)?;
    if raw.kind != "container" {
        return Ok(None);
    }
    // Before API 1.22 only the legacy `id` and `status` existed; later engines keep them too.
    let id = if raw.actor.id.is_empty() {
        raw.id
    } else {
        raw.actor.id
    };
    if id.is_empty() {
        return Err(Error::MissingId);
    }
    let action = if raw.action.is_empty() {
        raw.status
    } else {
        raw.action
    };
    Ok(Some(ContainerEvent {
        id,
        action,
        time_nano: raw.time_nano,
        managed: inspect::is_managed(&raw.actor.attributes),
    }))
}

/// Whether this action can change what the mirror shows. `exec_*` (which health checks produce
/// every interval), attach, detach, resize, top, copy, export and commit cannot.
pub fn is_relevant(action: &str) -> bool {
    // "health_status: healthy" on current engines, bare "health_status" on some.
    let verb = action.split(':').next().unwrap_or(action);
    matches!(
        verb,
        "create"
            | "start"
            | "restart"
            | "stop"
            | "die"
            | "kill"
            | "oom"
            | "pause"
            | "unpause"
            | "rename"
            | "update"
            | "destroy"
            | "health_status"
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawEvent {
    #[serde(rename = "Type", deserialize_with = "nullable")]
    kind: String,
    #[serde(rename = "Action", deserialize_with = "nullable")]
    action: String,
    #[serde(rename = "Actor", deserialize_with = "nullable")]
    actor: RawActor,
    #[serde(deserialize_with = "nullable")]
    id: String,
    #[serde(deserialize_with = "nullable")]
    status: String,
    #[serde(rename = "timeNano", deserialize_with = "nullable")]
    time_nano: i64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawActor {
    #[serde(rename = "ID", deserialize_with = "nullable")]
    id: String,
    #[serde(rename = "Attributes", deserialize_with = "nullable")]
    attributes: HashMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: &str = include_str!("../../tests/fixtures/docker/events.jsonl");
    const EV_ID: &str = "cba527209772b93c13403356e4b8aae5dc3e1d5aa153febe611b086de2f1cb0e";

    #[test]
    fn parses_a_captured_stream() {
        let mut actions = Vec::new();
        let mut others = 0;
        for line in EVENTS.lines() {
            match parse(line.as_bytes()).unwrap() {
                Some(e) => {
                    assert_eq!(e.id, EV_ID);
                    assert!(e.managed);
                    assert!(e.time_nano > 1_700_000_000_000_000_000);
                    if is_relevant(&e.action) {
                        actions.push(e.action);
                    }
                }
                None => others += 1,
            }
        }
        assert_eq!(others, 2, "the two network events");
        assert_eq!(
            actions,
            [
                "create",
                "start",
                "health_status: healthy",
                "pause",
                "unpause",
                "rename",
                "update",
                "kill",
                "kill",
                "die",
                "stop",
                "start",
                "restart",
                "kill",
                "kill",
                "die",
                "stop",
                "destroy"
            ]
        );
    }

    #[test]
    fn first_event_exactly() {
        let line = EVENTS.lines().next().unwrap();
        assert_eq!(
            parse(line.as_bytes()).unwrap(),
            Some(ContainerEvent {
                id: EV_ID.into(),
                action: "create".into(),
                time_nano: 1795787931883912027,
                managed: true,
            })
        );
    }

    #[test]
    fn relevance() {
        for a in [
            "start",
            "die",
            "health_status: unhealthy",
            "health_status",
            "oom",
            "destroy",
        ] {
            assert!(is_relevant(a), "{a}");
        }
        for a in [
            "exec_create: sh -c true",
            "exec_start: true ",
            "exec_die",
            "attach",
            "resize",
            "top",
            "",
        ] {
            assert!(!is_relevant(a), "{a}");
        }
    }

    #[test]
    fn legacy_fields_unmanaged_and_blank() {
        let e = parse(br#"{"Type":"container","id":"abc","status":"die"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.id.as_str(), e.action.as_str(), e.time_nano, e.managed),
            ("abc", "die", 0, false)
        );
        assert_eq!(parse(b"  \r\n").unwrap(), None);
        assert_eq!(parse(br#"{"Type":"image","Action":"pull"}"#).unwrap(), None);
        assert_eq!(parse(br#"{}"#).unwrap(), None);
    }

    #[test]
    fn launchers_with_invalid_vm_labels_are_unmanaged() {
        let ev = |extra: &str| {
            let line = format!(
                r#"{{"Type":"container","Action":"start","Actor":{{"ID":"abc","Attributes":{{"io.supd.application":"a","io.supd.service":"b","io.supd.instance":"1","io.supd.vm-container":"true"{extra}}}}}}}"#
            );
            parse(line.as_bytes()).unwrap().unwrap().managed
        };
        assert!(ev(""));
        assert!(ev(r#","io.supd.vm.terminals":"/run/t=ttyS2""#));
        assert!(!ev(r#","io.supd.vm.terminals":"/run/t=tty S2""#));
        assert!(!ev(r#","io.supd.vm.agent":"/run/../qga""#));
    }

    #[test]
    fn errors() {
        assert!(matches!(
            parse(br#"{"Type":"container","Action":"die"}"#),
            Err(Error::MissingId)
        ));
        assert!(matches!(parse(b"{\"Type\":"), Err(Error::Json(_))));
        assert!(matches!(parse(b"\xff"), Err(Error::Json(_))));
        assert!(matches!(
            parse(br#"{"Type":"container","Actor":{"Attributes":{"a":1}}}"#),
            Err(Error::Json(_))
        ));
        let big = vec![b' '; MAX_EVENT_LEN + 1];
        assert!(matches!(parse(&big), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn filter_decodes_to_container_type() {
        let mut decoded = String::new();
        let mut rest = EVENTS_FILTER;
        while let Some((head, tail)) = rest.split_once('%') {
            decoded.push_str(head);
            decoded.push(u8::from_str_radix(&tail[..2], 16).unwrap() as char);
            rest = &tail[2..];
        }
        decoded.push_str(rest);
        assert_eq!(decoded, r#"{"type":["container"]}"#);
    }

    #[test]
    fn a_cut_line_still_names_its_container_and_action() {
        let id = "1f151d169cdba587ae6fb21aae6ab97551458fd0b40bd797ddb8685acabf2bdf";
        let line = format!(
            "{{\"status\":\"health_status: healthy\",\"id\":\"{id}\",\"from\":\"x\",\"Type\":\"container\",\"Action\":\"health_status: healthy\",\"Actor\":{{\"ID\":\"{id}\",\"Attributes\":{{\"big\":\"aaaa"
        );
        assert_eq!(
            parse_cut(line.as_bytes()),
            Some((id.to_string(), "health_status: healthy".to_string()))
        );
        // Legacy engines: only `status`.
        let legacy = format!("{{\"status\":\"start\",\"id\":\"{id}\",\"from\":\"x");
        assert_eq!(
            parse_cut(legacy.as_bytes()),
            Some((id.to_string(), "start".to_string()))
        );
        for junk in [&b""[..], b"{\"id\":\"abc\"", b"{\"id\":\"", b"\xff\xfe"] {
            assert_eq!(parse_cut(junk), None);
        }
    }
}
