//! Query strings (src/http/query.rs), the RESTCONF `fields` language (src/fields.rs) applied to
//! a resource, the path-level name parsers the router uses, and the query decoders of every
//! endpoint (`ops::decode` with the text as the query string, the websocket handshake valid).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use supd::testing::config::Config;
use supd::testing::docker::inspect;
use supd::testing::fields::{Fields, MAX_DEPTH};
use supd::testing::http::query::{self, Query};
use supd::testing::http::request::{Method, Request};
use supd::testing::http::response::Accept;
use supd::testing::http::router::{Instance, Route, route, valid_name};
use supd::testing::model;
use supd::testing::ops::{self, DecodeCtx, DecodeError};

/// The endpoints that read the query string.
fn routes() -> &'static [Route] {
    static ROUTES: OnceLock<Vec<Route>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let base = "/v1/state/applications/shop/service-instances";
        [
            String::new(),
            "/web-1".to_owned(),
            "/web-1/connect".to_owned(),
            "/web-1/restart".to_owned(),
            "/web-1/containers/main/exec-interactive".to_owned(),
            "/web-1/containers/main/tcp-connect".to_owned(),
            "/web-1/vm-container/console".to_owned(),
        ]
        .iter()
        .map(|tail| route(&format!("{base}{tail}")).unwrap())
        .collect()
    })
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(Config::default)
}

/// A websocket upgrade offering every subprotocol, with `query`.
fn request(query: &str) -> Request {
    let headers = [
        ("host", "x"),
        ("connection", "Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        (
            "sec-websocket-protocol",
            "v1.connect.supd, v1.tcp-connect.supd, v1.exec-interactive.supd, v1.console.supd",
        ),
    ];
    Request {
        method: Method::Get,
        path: "/".to_owned(),
        query: query.to_owned(),
        minor: 1,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: Vec::new(),
        keep_alive: true,
        expect_continue: false,
    }
}

fn resource() -> &'static Value {
    static VALUE: OnceLock<Value> = OnceLock::new();
    VALUE.get_or_init(|| {
        json!({
            "name": "web-1",
            "state": {"phase": "running", "since": "2026-01-01T00:00:00Z"},
            "containers": [
                {"id": "abc", "name": "main", "ports": [{"port": 80, "protocol": "tcp"}],
                 "labels": {"a": "b"}, "health": null},
                {"id": "def", "name": "sidecar", "ports": [], "labels": {}, "health": "healthy"}
            ],
            "nested": {"a": {"b": {"c": {"d": [1, 2, {"e": true}]}}}},
            "count": 2
        })
    })
}

/// How deep the selection `value` keeps is, in object members.
fn depth(value: &Value) -> usize {
    match value {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(q) = Query::parse(text) {
        for name in q.names() {
            let _ = q.single(name);
            let _ = q.get(name);
        }
        let _ = q.iter().count();
        if let Ok(Some(expr)) = q.single("fields") {
            let _ = Fields::parse(expr);
        }
    }
    let req = request(text);
    let ctx = DecodeCtx::new(config(), Accept::default());
    let parsed = Query::parse(text).is_ok();
    for r in routes() {
        let decoded = ops::decode(r, &req, &ctx);
        // The query is parsed once, first: a malformed one fails every endpoint alike.
        if !parsed {
            assert!(
                matches!(decoded, Err(DecodeError::Query(_))),
                "{decoded:?} for a malformed query"
            );
        }
    }
    let _ = query::redacted(text, &["token", "secret"]);
    let _ = query::decode_path_segment(text);
    let _ = Instance::parse(text);
    let _ = valid_name(text);
    let _ = model::parse_instance_name(text);
    let _ = inspect::is_name(text);
    let _ = inspect::parse_instance_number(text);
    // The VM labels, each given the text: whatever is accepted keeps the contract's promises.
    for label in [
        inspect::LABEL_VM_AGENT,
        inspect::LABEL_VM_CONSOLE,
        inspect::LABEL_VM_TERMINALS,
        inspect::LABEL_VM_ADDRESS,
    ] {
        let labels: std::collections::HashMap<String, String> = [
            (inspect::LABEL_VM.to_owned(), "true".to_owned()),
            (label.to_owned(), text.to_owned()),
        ]
        .into_iter()
        .collect();
        if let Ok(Some(vm)) = inspect::vm_spec(&labels) {
            assert!(vm.terminals.len() <= inspect::MAX_VM_TERMINALS);
            for t in &vm.terminals {
                assert!(inspect::is_tty_name(&t.tty), "{t:?}");
                assert!(inspect::check_socket_path(&t.socket).is_ok(), "{t:?}");
            }
            assert!(inspect::check_socket_path(&vm.agent).is_ok());
            assert!(inspect::check_socket_path(&vm.console).is_ok());
        }
    }
    if let Ok(fields) = Fields::parse(text) {
        let selected = fields.apply(resource());
        // A selection never adds members: the result is no deeper than the resource.
        assert!(depth(&selected) <= depth(resource()).max(MAX_DEPTH));
        assert_eq!(
            Fields::parse(text).ok(),
            Some(fields),
            "parsing is not deterministic"
        );
    }
});
