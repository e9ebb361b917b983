//! Docker Engine API: the wire parser, container inspection, events, client and the mirror.

pub mod client;
pub mod events;
pub mod inspect;
pub mod mirror;
pub mod wire;

use serde::{Deserialize, Deserializer};

/// `null` where Docker marshals an empty Go slice or map (or leaves a field unset) reads as the
/// empty value: for `#[serde(deserialize_with = "nullable")]` in the inspect and events parsers.
pub(crate) fn nullable<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
