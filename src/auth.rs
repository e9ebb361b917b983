//! placeholder (the auth helper's version replaces this)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Read,
    Exec,
    Connect,
    Restart,
}
