//! Property tests of the frame reader and decoder: whatever a client sends, reading never
//! panics and never reads (or allocates) past the length rule.
//!
//! Cases as [`crate::fuzz::fuzz_config`] says.

use std::io::{self, Read};

use proptest::prelude::*;

use super::{FrameError, MAX_FRAME, Request, Response, decode, read_frame};
use crate::fuzz::{apply, edit, fuzz_config};

/// A request of every kind, as a client sends it.
const VALID_REQUESTS: [&str; 6] = [
    r#"{"version":1,"type":"status"}"#,
    r#"{"version":1,"type":"show"}"#,
    r#"{"version":1,"type":"control","command":"restart","wait":true}"#,
    r#"{"version":1,"type":"quit","keep_backend":false}"#,
    r#"{"version":1,"type":"kill_strays","dry_run":true}"#,
    r#"{"version":1,"type":"reload"}"#,
];

/// Pieces of JSON and of the protocol's vocabulary, to insert into a valid request.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    ".",
    "\n",
    " ",
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1",
    "2",
    "65536",
    "4294967296",
    "18446744073709551616",
    "1e400",
    "-0.0",
    "nan",
    "\"version\"",
    "\"type\"",
    "\"command\"",
    "\"wait\"",
    "\"keep_backend\"",
    "\"dry_run\"",
    "\"include_debug\"",
    "\"status\"",
    "\"control\"",
    "\"start\"",
    "\"stop\"",
    "\"restart\"",
    "\"\"",
    "\u{0}",
    "\u{feff}",
    "é",
    "🦀",
];

/// JSON objects with the protocol's keys (and others) holding values of any kind.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u32>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        proptest::sample::select(&["status", "control", "stop", "restart", "quit", "", "1"][..])
            .prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::vec(
                (
                    proptest::sample::select(
                        &[
                            "version",
                            "type",
                            "command",
                            "wait",
                            "keep_backend",
                            "dry_run",
                            "status",
                            "x"
                        ][..]
                    ),
                    inner,
                ),
                0..6,
            )
            .prop_map(|pairs| {
                serde_json::Value::Object(
                    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                )
            }),
        ]
    })
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: usize,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n;
        Ok(n)
    }
}

#[test]
fn the_valid_requests_of_the_property_tests_decode() {
    for text in VALID_REQUESTS {
        assert!(decode::<Request>(text.as_bytes()).is_ok(), "{text}");
    }
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn frame_reader_never_panics_and_never_reads_past_the_limit(
        prefix in prop_oneof![any::<u32>(), 0u32..200, Just(MAX_FRAME as u32), Just(MAX_FRAME as u32 + 1)],
        body in proptest::collection::vec(any::<u8>(), 0..600),
        endless in any::<bool>(),
    ) {
        // The length rule: a frame longer than MAX_FRAME is refused after reading its 4-byte
        // length, before any body is read or allocated; a shorter one reads exactly its
        // length. With an endless stream behind the prefix, nothing is ever read past it.
        let mut stream = prefix.to_le_bytes().to_vec();
        stream.extend_from_slice(&body);
        let tail: Box<dyn Read> = if endless { Box::new(io::repeat(b'{')) } else { Box::new(io::empty()) };
        let mut reader = Counting { inner: stream.as_slice().chain(tail), read: 0 };
        let result = read_frame::<Request>(&mut reader);
        let len = prefix as usize;
        if len > MAX_FRAME {
            prop_assert!(matches!(result, Err(FrameError::TooLarge(n)) if n == len));
            prop_assert_eq!(reader.read, 4);
        } else {
            prop_assert!(reader.read <= 4 + len);
        }
        prop_assert!(reader.read <= 4 + MAX_FRAME);
    }

    #[test]
    fn frame_decoder_never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode::<Request>(&body);
        let _ = decode::<Response>(&body);
    }

    #[test]
    fn frame_decoder_never_panics_on_mutated_requests(
        which in 0..VALID_REQUESTS.len(),
        edits in proptest::collection::vec(edit(TOKENS), 1..6),
    ) {
        let body = apply(VALID_REQUESTS[which], &edits);
        let _ = decode::<Request>(&body);
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        let _ = read_frame::<Request>(&mut frame.as_slice());
    }

    #[test]
    fn frame_decoder_never_panics_on_json_of_any_shape(value in json_value()) {
        let body = serde_json::to_vec(&value).unwrap();
        let _ = decode::<Request>(&body);
        let _ = decode::<Response>(&body);
    }
}
