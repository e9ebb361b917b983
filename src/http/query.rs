//! placeholder (the parsers helper's version replaces this)
#[derive(Debug)]
pub struct Error(String);
impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
pub fn decode_path_segment(seg: &str) -> Result<String, Error> {
    if seg.contains('%') {
        return Err(Error("percent".into()));
    }
    Ok(seg.to_string())
}
