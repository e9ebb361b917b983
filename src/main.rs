//! `supd`: command line and start-up only; everything else is in the library.

use std::process::ExitCode;

use supd::daemon::{self, Command, Config, Listener, Sealed, Server};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let command = match daemon::parse_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("supd: {e}");
            eprintln!("{}", daemon::usage());
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Version => {
            println!("supd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Help(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Command::CheckConfig(cfg) => {
            // The tokens file is part of a working configuration: check it too, without
            // creating anything.
            if (cfg.tokens.exists() || !cfg.tokens_is_default)
                && let Err(e) = daemon::Tokens::load(&cfg.tokens)
            {
                eprintln!("supd: {e}");
                return ExitCode::FAILURE;
            }
            // TLS listeners: every file readable, keys fitting their certificates.
            for (addr, files) in &cfg.listen_tls {
                if let Err(e) = daemon::tls::server_config(files) {
                    eprintln!("supd: TLS on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            }
            // Peer sites: token files trusted and readable, TLS files readable.
            let (_, errors) = daemon::sites::Peers::load(&cfg.sites, daemon::sites::Resolve::Now);
            if !errors.is_empty() {
                for e in &errors {
                    eprintln!("supd: {e}");
                }
                return ExitCode::FAILURE;
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        Command::TokenCreate {
            tokens,
            name,
            operations,
            applications,
        } => match daemon::create_token(&tokens, &name, &operations, &applications) {
            Ok(token) => {
                println!("{token}");
                eprintln!(
                    "supd: token {name:?} added to {}; it is shown only this once (send SIGHUP to a running supd to load it)",
                    tokens.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("supd: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(cfg) => {
            run_from_sealed_copy();
            run(cfg)
        }
    }
}

/// Before anything else: the daemon re-executes itself from a sealed memfd (see
/// `supd::sys::exe`), so no process it starts in a container is backed by the binary on the
/// host's disk. Returns only when no re-execution happened. When it is impossible, supd still
/// serves what does not enter containers, and refuses exec and terminals (503) rather than
/// running them unprotected.
fn run_from_sealed_copy() {
    match daemon::ensure_sealed() {
        Ok(Sealed::Already) => {
            // fexecve names the process after its descriptor: give it its name back for ps,
            // top and the journal.
            let _ = nix::sys::prctl::set_name(c"supd");
        }
        Ok(Sealed::Failed) => log::error!(
            "supd is not running from a sealed copy of its binary after re-executing; exec into containers is disabled"
        ),
        Err(e) => log::error!(
            "cannot re-execute supd from a sealed copy of its binary ({e}); exec into containers is disabled"
        ),
    }
}

/// Each session holds a few descriptors (socket, PTY or pipes, pidfds): take the whole hard
/// limit so that hundreds of sessions fit under the usual soft limit of 1,024.
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        log::warn!("cannot raise the descriptor limit from {soft} to {hard}: {e}");
    }
}

fn run(cfg: Config) -> ExitCode {
    raise_nofile();
    let inherited = match daemon::listen_fds() {
        Ok(fds) => fds.into_iter().map(Listener::from).collect::<Vec<_>>(),
        Err(e) => {
            log::error!("socket activation: {e}");
            return ExitCode::FAILURE;
        }
    };
    log::info!(
        "supd {} starting: tenant {}, site {}, host {}, docker {}",
        env!("CARGO_PKG_VERSION"),
        cfg.tenant,
        cfg.site,
        cfg.host,
        cfg.docker_socket.display()
    );
    let mut server = match Server::new(cfg, inherited) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
