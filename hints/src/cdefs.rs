//! A reader for the `#define`s of this project's own C headers, so that
//! unit tests can check the Rust constants against the one definition.
//! It understands exactly what those headers use: decimal and hex numbers,
//! parenthesised negatives, string literals and concatenation with other
//! string macros.

use std::collections::HashMap;

pub struct Defines(HashMap<String, String>);

pub fn parse(header: &str) -> Defines {
    let mut map = HashMap::new();
    for line in header.lines() {
        let Some(rest) = line.trim().strip_prefix("#define") else {
            continue;
        };
        let rest = rest.trim();
        let (name, value) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let value = value.split("/*").next().unwrap_or("").trim();
        map.insert(name.to_string(), value.to_string());
    }
    Defines(map)
}

impl Defines {
    pub fn number(&self, name: &str) -> Option<i64> {
        let v = self.0.get(name)?.trim();
        let v = v.trim_start_matches('(').trim_end_matches(')');
        if let Some(hex) = v.strip_prefix("0x") {
            return i64::from_str_radix(hex, 16).ok();
        }
        v.parse().ok()
    }

    /// A string macro, with adjacent literals and string macros joined.
    pub fn string(&self, name: &str) -> Option<String> {
        let mut out = String::new();
        let mut rest = self.0.get(name)?.trim();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('"') {
                let end = r.find('"')?;
                out.push_str(&r[..end]);
                rest = r[end + 1..].trim_start();
            } else {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                out.push_str(&self.string(&rest[..end])?);
                rest = rest[end..].trim_start();
            }
        }
        Some(out)
    }
}
