//! The request-body decoders on their own, with bodies up to the largest any endpoint takes:
//! `ops::exec::decode_cmd` (no Content-Type, JSON and YAML) and `ops::restart::decode_immediate`,
//! on their own and through the endpoints' decoders (`ExecParams::decode`,
//! `RestartParams::decode`), behind `http::body::check` (size and nesting). The property besides no panic: every input
//! is decided in linear time — run with `-timeout=1` and a `-max_len` above
//! `ops::exec::MAX_BODY`, an input that makes the YAML parser's time grow with its nesting
//! is a finding (a timeout). On JSON, where the scan's reading of quotes is exact, a body the
//! check lets through nests at most `MAX_NESTING` deep.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use supd::testing::config::Config;
use supd::testing::http::body::{self, MAX_NESTING};
use supd::testing::http::request::{Method, Request};
use supd::testing::http::response::Accept;
use supd::testing::http::router::{Route, route};
use supd::testing::ops::{self, DecodeCtx};

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(Config::default)
}

/// An exec route and a restart route.
fn routes() -> &'static (Route, Route) {
    static ROUTES: OnceLock<(Route, Route)> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let base = "/v1/state/applications/shop/service-instances/web-1";
        (
            route(&format!("{base}/containers/main/exec")).unwrap(),
            route(&format!("{base}/restart")).unwrap(),
        )
    })
}

fn request(content_type: Option<&str>, body: &[u8]) -> Request {
    let mut headers = vec![("host".to_owned(), "x".to_owned())];
    if let Some(ct) = content_type {
        headers.push(("content-type".to_owned(), ct.to_owned()));
    }
    Request {
        method: Method::Post,
        path: "/".to_owned(),
        query: String::new(),
        minor: 1,
        headers,
        body: body.to_vec(),
        keep_alive: true,
        expect_continue: false,
    }
}

/// Nesting depth of the parsed value, for the check's promise.
fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = match selector % 4 {
        0 => None,
        1 => Some("application/json"),
        2 => Some("application/yaml"),
        _ => Some("text/plain"),
    };
    let req = request(content_type, body);
    let direct = ops::exec::decode_cmd(content_type, body);
    let ctx = DecodeCtx::new(config(), Accept::default());
    let exec = ops::decode(&routes().0, &req, &ctx);
    // The endpoint's decoder reads the body exactly as the body decoder does.
    if let Err(e) = &direct {
        assert_eq!(exec.as_ref().err(), Some(e), "exec decoder disagrees");
    }
    let immediate = ops::restart::decode_immediate(body);
    match ops::decode(&routes().1, &req, &ctx) {
        Ok(ops::Call::Restart(p)) => assert_eq!(Ok(p.immediate), immediate),
        Ok(other) => panic!("a restart route decoded to {other:?}"),
        Err(e) => assert_eq!(Err(e), immediate),
    }
    if body::check(body, ops::exec::MAX_BODY).is_ok() {
        // JSON is YAML too; the check must bound what serde_json sees as well.
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            assert!(
                depth(&v) <= MAX_NESTING,
                "accepted a body nested {} deep",
                depth(&v)
            );
        }
    }
});
