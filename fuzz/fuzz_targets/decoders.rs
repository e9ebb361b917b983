//! The endpoints' decoders (`ops::decode`) behind the request parser and the router: bytes as
//! a client sends them -> `http::request::Parser` -> `router::route` -> `ops::decode`. Each
//! parsed request is decoded for the route its path names and, so that bodies, queries and
//! upgrade headers reach every decoder whatever the path says, for each endpoint's route too.
//! Checked besides no panic: decoding is deterministic, and a decoded call is the call of the
//! route's endpoint (an exec route never yields a restart...).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use supd::testing::config::{Config, Limits};
use supd::testing::http::request::{Parser, Request};
use supd::testing::http::response::Accept;
use supd::testing::http::router::{Endpoint, Route, route};
use supd::testing::ops::{self, Call, DecodeCtx};

/// One path per endpoint, so every decoder sees every request.
const PATHS: [&str; 9] = [
    "/v1/state/applications/shop/service-instances",
    "/v1/state/applications/shop/service-instances/web-1",
    "/v1/state/applications/shop/service-instances/web-1/connect",
    "/v1/state/applications/shop/service-instances/web-1/restart",
    "/v1/state/applications/shop/service-instances/web-1/containers/main/exec",
    "/v1/state/applications/shop/service-instances/web-1/init-containers/setup/exec-interactive",
    "/v1/state/applications/shop/service-instances/web-1/containers/main/tcp-connect",
    "/v1/state/applications/shop/service-instances/web-1/vm-container/exec",
    "/v1/state/applications/shop/service-instances/web-1/vm-container/console",
];

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let mut c = Config::default();
        c.ws.allowed_origins = vec!["https://console.example".to_owned()];
        c.site = "here".to_owned();
        c
    })
}

fn routes() -> &'static [Route] {
    static ROUTES: OnceLock<Vec<Route>> = OnceLock::new();
    ROUTES.get_or_init(|| {
        PATHS
            .iter()
            .map(|p| route(p).expect("a valid path"))
            .collect()
    })
}

fn matches_endpoint(call: &Call, endpoint: &Endpoint) -> bool {
    matches!(
        (call, endpoint),
        (Call::State(_), Endpoint::List | Endpoint::Get { .. })
            | (Call::Exec(_), Endpoint::Exec { .. })
            | (Call::Interactive(_), Endpoint::ExecInteractive { .. })
            | (Call::TcpConnect(_), Endpoint::TcpConnect { .. })
            | (Call::Connect(_), Endpoint::Connect { .. })
            | (Call::Restart(_), Endpoint::Restart { .. })
            | (Call::Console(_), Endpoint::Console { .. })
    )
}

fn decode(route: &Route, req: &Request, ctx: &DecodeCtx<'_>) {
    let first = ops::decode(route, req, ctx);
    if let Ok(call) = &first {
        assert!(
            matches_endpoint(call, &route.endpoint),
            "{call:?} for {route:?}"
        );
    }
    let again = ops::decode(route, req, ctx);
    assert_eq!(
        format!("{first:?}"),
        format!("{again:?}"),
        "decoding is not deterministic"
    );
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut parser = Parser::new(limits.head_bytes, limits.body_bytes);
    let mut buf = data;
    // At most a few requests: each is decoded ten times.
    for _ in 0..4 {
        let Ok(p) = parser.parse(buf) else {
            return;
        };
        buf = &buf[p.consumed..];
        if let Some(head) = p.head {
            if parser.continue_body(head, limits.body_bytes).is_err() {
                return;
            }
            continue;
        }
        let Some(req) = p.request else {
            return;
        };
        let ctx = DecodeCtx::new(config(), Accept::parse(req.header("accept")));
        if let Ok(own) = route(&req.path) {
            decode(&own, &req, &ctx);
        }
        for r in routes() {
            decode(r, &req, &ctx);
        }
    }
});
