//! What the property tests share: their settings, and random edits of a valid input, which
//! get deeper into a parser than random bytes do.

use proptest::prelude::*;

/// 2000 cases per property, `PROPTEST_CASES=100000` for a longer run. Failures are not
/// persisted to files (the printed minimal case is the record).
pub fn fuzz_config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// An edit of a text: delete a range, insert a token, overwrite a byte, copy a range
/// elsewhere (a key given twice, an object inside itself), duplicate or swap lines.
#[derive(Debug, Clone)]
pub enum Edit {
    Delete(usize, usize),
    Insert(usize, &'static str),
    Byte(usize, u8),
    Copy { from: usize, len: usize, to: usize },
    DuplicateLine(usize),
    SwapLines(usize, usize),
}

/// Any edit, inserting one of `tokens`.
pub fn edit(tokens: &'static [&'static str]) -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), proptest::sample::select(tokens)).prop_map(|(at, t)| Edit::Insert(at, t)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Byte(at, b)),
        (any::<usize>(), 0usize..40, any::<usize>()).prop_map(|(from, len, to)| Edit::Copy {
            from,
            len,
            to
        }),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

/// `base` with `edits` applied in turn (positions wrap around the text's length); the bytes
/// need not stay UTF-8.
pub fn apply(base: &str, edits: &[Edit]) -> Vec<u8> {
    let mut bytes = base.as_bytes().to_vec();
    for edit in edits {
        match *edit {
            Edit::Delete(at, n) => {
                let at = at % bytes.len().max(1);
                let end = (at + n).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Edit::Insert(at, token) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, token.bytes());
            }
            Edit::Byte(at, b) => {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = b;
                }
            }
            Edit::Copy { from, len, to } => {
                if !bytes.is_empty() {
                    let from = from % bytes.len();
                    let piece = bytes[from..(from + len).min(bytes.len())].to_vec();
                    let to = to % (bytes.len() + 1);
                    bytes.splice(to..to, piece);
                }
            }
            Edit::DuplicateLine(n) | Edit::SwapLines(n, _) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let a = n % lines.len();
                    match *edit {
                        Edit::SwapLines(_, m) => {
                            let b = m % lines.len();
                            lines.swap(a, b)
                        }
                        _ => {
                            let line = lines[a];
                            lines.insert(a, line)
                        }
                    }
                }
                bytes = lines.join("\n").into_bytes();
            }
        }
    }
    bytes
}
